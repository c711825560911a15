// Verifies one QStash signature with Upstash's own Receiver (@upstash/qstash), so that the
// stand-in's tokens are checked by the official SDK and not only by our own verifier.
//
// Reads a JSON object on stdin: {currentSigningKey, nextSigningKey, signature, body, url}.
// Prints "valid" and exits 0, or prints "invalid: <reason>" and exits 1; exits 2 when the
// input itself is unusable.

import { Receiver } from "@upstash/qstash";

let input = "";
for await (const chunk of process.stdin) input += chunk;

let request;
try {
  request = JSON.parse(input);
} catch (error) {
  console.error(`bad input: ${error.message}`);
  process.exit(2);
}
for (const field of ["currentSigningKey", "nextSigningKey", "signature", "body", "url"]) {
  if (typeof request[field] !== "string") {
    console.error(`bad input: '${field}' must be a string`);
    process.exit(2);
  }
}

// devMode false: the environment must not swap in other keys.
const receiver = new Receiver({
  currentSigningKey: request.currentSigningKey,
  nextSigningKey: request.nextSigningKey,
  devMode: false,
});
try {
  await receiver.verify({ signature: request.signature, body: request.body, url: request.url });
  console.log("valid");
} catch (error) {
  console.log(`invalid: ${error.message}`);
  process.exit(1);
}

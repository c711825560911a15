// Drives the QStash stand-in with Upstash's own client (@upstash/qstash), so that the shapes
// of its newer routes — retry-delay expressions, labels, redaction, bulk cancel, flow-control
// management, DLQ paging and bulk delete — are checked against the official SDK and not
// only against our reading of the docs.
//
// Reads a JSON object on stdin: {baseUrl, token, url, dlqLabel}: `url` answers 200,
// `dlqLabel` labels the three dead letters the caller made beforehand (there is one more,
// without it). Prints one JSON object with what each call answered, and exits 0; on an
// error, prints "error: <message>" and exits 1; exits 2 when the input itself is unusable.

import { Client } from "@upstash/qstash";

let input = "";
for await (const chunk of process.stdin) input += chunk;

let request;
try {
  request = JSON.parse(input);
} catch (error) {
  console.error(`bad input: ${error.message}`);
  process.exit(2);
}
for (const field of ["baseUrl", "token", "url", "dlqLabel"]) {
  if (typeof request[field] !== "string") {
    console.error(`bad input: '${field}' must be a string`);
    process.exit(2);
  }
}

// devMode false: the environment must not swap in the development server; no retries of
// our own calls, so that a refused call fails at once.
const client = new Client({
  baseUrl: request.baseUrl,
  token: request.token,
  devMode: false,
  retry: false,
});

const report = {};
try {
  // A delayed message with every new publish option the SDK has.
  const published = await client.publishJSON({
    url: request.url,
    body: { task: "sdk" },
    delay: 3600,
    retries: 2,
    retryDelay: "1000 * (1 + retried)",
    label: ["sdk", "batch-1"],
    redact: { body: true, header: ["X-Secret"] },
    headers: { "X-Secret": "s3cret" },
    flowControl: { key: "sdk-key", parallelism: 2, rate: 10, period: "1m" },
  });
  report.published = published;
  report.message = await client.messages.get(published.messageId);

  // Flow-control management.
  await client.flowControl.pin("sdk-key", { parallelism: 1, rate: 5, period: 30 });
  report.pinned = await client.flowControl.get("sdk-key");
  await client.flowControl.pause("sdk-key");
  report.paused = await client.flowControl.get("sdk-key");
  await client.flowControl.resume("sdk-key");
  await client.flowControl.resetRate("sdk-key");
  await client.flowControl.unpin("sdk-key", { parallelism: true, rate: true });
  report.unpinned = await client.flowControl.get("sdk-key");
  try {
    await client.flowControl.get("no-such-key");
    report.unknownKey = "found";
  } catch (error) {
    report.unknownKey = { status: error.status ?? null, message: error.message };
  }

  // Bulk cancel: by filter, by ids, and the deprecated deleteMany.
  const second = await client.publish({ url: request.url, body: "2", delay: 3600, label: "sdk" });
  const third = await client.publish({ url: request.url, body: "3", delay: 3600 });
  report.cancelByLabel = await client.messages.cancel({ filter: { label: "sdk" } });
  report.cancelAgain = await client.messages.cancel([second.messageId]);
  report.deleteMany = await client.messages.deleteMany([third.messageId]);
  report.ids = [published.messageId, second.messageId, third.messageId];

  // The DLQ: pages with a cursor under a label filter, then bulk deletes.
  const label = request.dlqLabel;
  const page1 = await client.dlq.listMessages({ count: 2, filter: { label } });
  const page2 = await client.dlq.listMessages({ count: 2, cursor: page1.cursor, filter: { label } });
  report.dlqPages = [page1, page2].map((page) => ({
    dlqIds: page.messages.map((m) => m.dlqId),
    labels: page.messages.map((m) => m.labels),
    cursor: page.cursor ?? null,
  }));
  report.dlqDelete = await client.dlq.delete({ filter: { label } });
  const rest = await client.dlq.listMessages();
  report.dlqRest = rest.messages.map((m) => m.dlqId);
  report.dlqDeleteMany = await client.dlq.deleteMany({ dlqIds: report.dlqRest });
  report.dlqLeft = (await client.dlq.listMessages()).messages.length;
} catch (error) {
  console.log(`error: ${error.message} (after ${Object.keys(report).join(", ")})`);
  process.exit(1);
}
console.log(JSON.stringify(report));

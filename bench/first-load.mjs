// The first load of the Generate page in Chromium, as a creator meets it: bytes over the
// wire (what the server sent, compressed, headers included) and the time from navigation
// to the page being interactive (`html[data-hydrated]`, set by the first effect after
// hydration), with an empty cache (cold) and again in the same browser (warm).
//
//   scripts/build.sh --release && node bench/first-load.mjs [rounds]
//
// Runs the release server (target/release) on the release site (target/site) with the
// fake provider, through end2end/support.mjs.
import { startStack, ADMIN } from '../end2end/support.mjs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
process.env.CREVID_TARGET_DIR ??= join(root, 'target', 'release');
const rounds = Number(process.argv[2] ?? 5);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const kb = (bytes) => (bytes / 1024).toFixed(1);

// One visit to `url` in `page`: every response's bytes on the wire, by kind, and the time
// to interactive in ms.
async function visit(page, url) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const urls = new Map();
  const bytes = { total: 0, wasm: 0, js: 0, css: 0, html: 0, other: 0 };
  const requests = { total: 0, fromNetwork: 0 };
  cdp.on('Network.responseReceived', (e) => urls.set(e.requestId, e.response.url));
  cdp.on('Network.requestWillBeSent', () => { requests.total += 1; });
  cdp.on('Network.loadingFinished', (e) => {
    const u = urls.get(e.requestId) ?? '';
    const kind = /\.wasm$/.test(u) ? 'wasm' : /\.js$/.test(u) ? 'js' : /\.css$/.test(u) ? 'css'
      : u.startsWith(url) ? 'html' : 'other';
    bytes[kind] += e.encodedDataLength;
    bytes.total += e.encodedDataLength;
    if (e.encodedDataLength > 0) requests.fromNetwork += 1;
  });
  await page.goto(url);
  await page.waitForSelector('html[data-hydrated="true"]');
  const interactiveMs = await page.evaluate(() => performance.now());
  // Let the last responses report their sizes.
  await page.waitForLoadState('networkidle');
  await cdp.detach();
  return { bytes, requests, interactiveMs };
}

const stack = await startStack();
try {
  // The first admin, signed in; every measured visit carries this session.
  const setup = await stack.browser.newContext();
  const page = await setup.newPage();
  await page.goto(`${stack.base}/setup`);
  await page.waitForSelector('html[data-hydrated="true"]');
  await page.locator('input[name="email"]').fill(ADMIN.email);
  await page.locator('input[name="password"]').fill(ADMIN.password);
  await page.locator('input[name="confirm"]').fill(ADMIN.password);
  await page.getByRole('button', { name: 'Create admin and sign in' }).click();
  await page.waitForURL(/\/settings$/);
  const session = await setup.storageState();
  await setup.close();

  const cold = [];
  const warm = [];
  for (let round = 0; round < rounds; round += 1) {
    const context = await stack.browser.newContext({ storageState: session });
    const tab = await context.newPage();
    cold.push(await visit(tab, `${stack.base}/`));
    // Warm: the same browser comes back to the page (a navigation, not a reload).
    await tab.goto('about:blank');
    warm.push(await visit(tab, `${stack.base}/`));
    await context.close();
  }
  const report = (name, runs) => {
    const pick = (f) => median(runs.map(f));
    console.log(`  ${name.padEnd(5)} transferred ${kb(pick((r) => r.bytes.total)).padStart(7)} KiB `
      + `(WASM ${kb(pick((r) => r.bytes.wasm))}, JS ${kb(pick((r) => r.bytes.js))}, CSS ${kb(pick((r) => r.bytes.css))}, `
      + `HTML ${kb(pick((r) => r.bytes.html))}, other ${kb(pick((r) => r.bytes.other))}); `
      + `${pick((r) => r.requests.fromNetwork)} of ${pick((r) => r.requests.total)} requests from the network; `
      + `interactive after median ${pick((r) => r.interactiveMs).toFixed(0)} ms `
      + `(runs: ${runs.map((r) => r.interactiveMs.toFixed(0)).join(', ')})`);
  };
  console.log(`first load of the Generate page, signed in, ${rounds} rounds, Chromium on 127.0.0.1:`);
  report('cold', cold);
  report('warm', warm);
} finally {
  await stack.stop();
}

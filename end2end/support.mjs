// Starts the fake OpenAI server and CREVID (the binaries cargo built) on free ports with a
// fresh data directory, and Debian's Chromium through playwright-core.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(process.env.CREVID_TARGET_DIR ?? join(root, 'target', 'debug'), name);
export const outputDir = join(root, 'end2end', 'output');
mkdirSync(outputDir, { recursive: true });

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
    srv.on('error', fail);
  });
}

// Resolves with the first stdout/stderr line that matches, so nothing sleeps to wait.
function startProcess(cmd, args, env, ready) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  const found = new Promise((ok, fail) => {
    const onData = (chunk) => {
      const text = chunk.toString();
      logs.push(text);
      const match = text.match(ready);
      if (match) ok(match);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => fail(new Error(`${cmd} exited with ${code} before it was ready:\n${logs.join('')}`)));
  });
  return { child, found, logs };
}

export async function startStack() {
  const dataDir = mkdtempSync(join(tmpdir(), 'crevid-e2e-'));
  const fake = startProcess(bin('fake-openai'), ['--latency-ms', '300'], {}, /(http:\/\/\S+\/v1)/);
  const [, fakeUrl] = await fake.found;
  const port = await freePort();
  const env = {
    CREVID_DATA_DIR: dataDir,
    LEPTOS_SITE_ROOT: process.env.LEPTOS_SITE_ROOT ?? join(root, 'target', 'site'),
    DATABASE_URL: process.env.CREVID_E2E_DATABASE_URL ?? '',
  };
  const app = startProcess(
    bin('crevid'),
    ['serve'],
    { ...env, LEPTOS_SITE_ADDR: `127.0.0.1:${port}`, RUST_LOG: 'warn,crevid=info' },
    /CREVID listening on/,
  );
  await app.found;
  const base = `http://127.0.0.1:${port}`;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  return {
    base,
    fakeUrl,
    browser,
    logs: () => app.logs.join(''),
    async stop() {
      await browser.close();
      app.child.kill('SIGTERM');
      fake.child.kill('SIGTERM');
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const ADMIN = { email: 'admin@example.com', password: 'admin password 123' };
export const CREATOR = { email: 'creator@example.com', password: 'creator password 123' };

// A fresh browser context per test: its own cookies, so each test signs in as itself.
export async function newPage(stack) {
  const context = await stack.browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (err) => { throw err; });
  return page;
}

export async function signIn(stack, page, who) {
  await open(page, `${stack.base}/login`);
  await page.locator('input[name="email"]').fill(who.email);
  await page.locator('input[name="password"]').fill(who.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('signed-in-as').filter({ hasText: who.email }).waitFor();
  await page.waitForSelector('html[data-hydrated="true"]');
}

// Waits until the WASM has hydrated the page (the app sets this attribute in an effect).
export async function open(page, url) {
  await page.goto(url);
  await page.waitForSelector('html[data-hydrated="true"]');
}

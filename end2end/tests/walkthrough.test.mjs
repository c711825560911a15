// Generate → Save → Library → edit a scene → delete, in a real Chromium, once with the
// offline splitter and once with the fake OpenAI-compatible server. Screenshots of every
// page go to end2end/output/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';
import { startStack, newPage, open, outputDir, signIn, ADMIN, CREATOR } from '../support.mjs';

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

const shot = (page, name) => page.screenshot({ path: join(outputDir, `${name}.png`), fullPage: true });

async function walkthrough(page, { mode, input, expectTitle, prefix }) {
  await open(page, `${stack.base}/`);
  if (mode === 'script') {
    await page.getByLabel('Use my script (offline)').check();
  }
  await page.locator('textarea[name="input"]').fill(input);
  await page.locator('details.presets summary').click();
  await page.locator('input[name="scene_count"]').fill('3');
  await page.locator('button[type="submit"]').click();
  const script = page.getByTestId('script');
  await script.waitFor();
  await assert.doesNotReject(script.getByRole('heading', { name: expectTitle }).waitFor());
  assert.equal(await script.locator('li.scene').count(), 3);
  await page.waitForFunction(() => [...document.querySelectorAll('li.scene')].every((li) => getComputedStyle(li).opacity === '1'));
  await shot(page, `${prefix}-1-generate`);

  await page.getByRole('button', { name: 'Save to library' }).click();
  await page.waitForURL(/\/contents\/\d+$/);
  const contentUrl = page.url();
  await page.waitForSelector('textarea[name="narration"]');
  await shot(page, `${prefix}-2-content`);

  await open(page, `${stack.base}/library`);
  const card = page.locator('.content-card a.title', { hasText: expectTitle });
  await card.waitFor();
  await shot(page, `${prefix}-3-library`);
  await card.click();
  await page.waitForURL(contentUrl);
  await page.waitForSelector('html[data-hydrated="true"]');

  // Edit the first scene, move the last one up, and save.
  const narrations = page.locator('textarea[name="narration"]');
  await narrations.first().waitFor();
  const before = await narrations.evaluateAll((els) => els.map((e) => e.value));
  assert.equal(before.length, 3);
  await narrations.first().fill('An edited first scene, written in the browser.');
  assert.ok(await page.getByRole('button', { name: 'Move down' }).last().isDisabled());
  await page.getByRole('button', { name: 'Move up' }).last().click();
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByText('All changes saved.').waitFor();
  await open(page, contentUrl);
  const after = await narrations.evaluateAll((els) => els.map((e) => e.value));
  assert.deepEqual(after, ['An edited first scene, written in the browser.', before[2], before[1]]);
  await shot(page, `${prefix}-4-edited`);

  await page.getByRole('button', { name: 'Delete', exact: true }).click();
  await page.getByRole('button', { name: 'Yes, delete' }).click();
  await page.waitForURL(/\/library$/);
  await page.waitForSelector('html[data-hydrated="true"]');
  assert.equal(await page.locator('.content-card a.title', { hasText: expectTitle }).count(), 0);
  await shot(page, `${prefix}-5-deleted`);
}

test('first run: the first admin is created in the browser, configures the provider, adds a creator', async () => {
  const page = await newPage(stack);
  await page.goto(`${stack.base}/library`);
  await page.waitForURL(/\/setup$/);
  await page.waitForSelector('html[data-hydrated="true"]');
  await page.locator('input[name="email"]').fill(ADMIN.email);
  await page.locator('input[name="password"]').fill(ADMIN.password);
  await page.locator('input[name="confirm"]').fill(ADMIN.password);
  await shot(page, 'setup');
  await page.getByRole('button', { name: 'Create admin and sign in' }).click();
  await page.waitForURL(/\/settings$/);
  await page.waitForSelector('html[data-hydrated="true"]');
  await page.getByTestId('signed-in-as').filter({ hasText: ADMIN.email }).waitFor();

  await page.locator('input[name="llm_base_url"]').fill(stack.fakeUrl);
  await page.locator('input[name="llm_model"]').fill('fake-script-model');
  await page.locator('input[name="llm_api_key"]').fill('sk-e2e-0123456789abcdef');
  // Stock footage from the fake's stand-in for Pexels.
  await page.locator('input[name="pexels_base_url"]').fill(stack.fakeUrl.replace(/\/v1$/, '/pexels'));
  await page.locator('input[name="pexels_api_key"]').fill('pexels-e2e-key');
  await page.getByRole('button', { name: 'Save settings' }).click();
  await page.getByText('Settings saved.').waitFor();
  assert.match(await page.locator('input[name="llm_api_key"]').getAttribute('placeholder'), /sk-…cdef/);
  await shot(page, 'settings');

  await open(page, `${stack.base}/status`);
  await page.locator('.check').first().waitFor();
  assert.equal(await page.locator('.check.ok').count(), 6, await page.locator('.checks').innerText());
  assert.match(await page.locator('.checks').innerText(), /Media storage[\s\S]*Media in /);
  await shot(page, 'status');

  // The admin adds the creator every other test signs in as.
  await open(page, `${stack.base}/users`);
  await page.locator('input[name="new_email"]').fill(CREATOR.email);
  await page.locator('input[name="new_password"]').fill(CREATOR.password);
  await page.getByRole('button', { name: 'Add user' }).click();
  await page.locator('.rows').getByText(CREATOR.email).waitFor();
  await shot(page, 'users');
  await page.context().close();
});

test('script splitter: a creator signs in, generates, saves, lists, edits, deletes', async () => {
  const page = await newPage(stack);
  await signIn(stack, page, CREATOR);
  await walkthrough(page, {
    mode: 'script',
    input: 'Lighthouses guided ships for centuries. Their lamps turned all night. Keepers lived beside them. ' +
      'Today most of them run by themselves. Some have become museums.',
    expectTitle: 'Lighthouses guided ships for centuries',
    prefix: 'splitter',
  });
  await page.context().close();
});

test('fake OpenAI: a creator generates from a topic, saves, lists, edits, deletes', async () => {
  const page = await newPage(stack);
  await signIn(stack, page, CREATOR);
  await walkthrough(page, {
    mode: 'topic',
    input: 'the secret life of octopuses',
    expectTitle: 'All about the secret life of octopuses',
    prefix: 'openai',
  });
  await page.context().close();
});

test('a creator generates images and narration and watches every scene fill in', async () => {
  const page = await newPage(stack);
  await signIn(stack, page, CREATOR);
  await page.getByLabel('Use my script (offline)').check();
  await page.locator('textarea[name="input"]').fill('Bees dance to share news. The dance points at flowers. Other bees follow it home.');
  await page.locator('details.presets summary').click();
  await page.locator('input[name="scene_count"]').fill('3');
  await page.locator('button[type="submit"]').click();
  await page.getByTestId('script').waitFor();
  await page.getByRole('button', { name: 'Save to library' }).click();
  await page.waitForURL(/\/contents\/\d+$/);
  await page.waitForSelector('html[data-hydrated="true"]');
  // The voice: espeak-ng's variants for the content's language, heard before anything
  // is made, then saved for the narration.
  const voice = page.locator('.voice select[name="voice"]');
  await voice.locator('option[value="en+f3"]').waitFor({ state: 'attached' });
  await voice.selectOption('en+f3');
  await page.locator('.voice input[name="speed"]').fill('1.2');
  const sampled = page.waitForResponse((r) => r.url().includes('/api/voices/preview'));
  await page.getByRole('button', { name: '▶ Play' }).click();
  const sample = await sampled;
  assert.equal(sample.status(), 200);
  assert.equal(sample.headers()['content-type'], 'audio/wav');
  assert.match(sample.url(), /voice=en%2Bf3/);
  assert.match(sample.url(), /speed=1\.2/);
  await page.waitForFunction(() => {
    const a = document.querySelector('.voice audio');
    return a && a.readyState >= 1 && a.duration > 0.5;
  });
  await page.getByRole('button', { name: 'Save voice' }).click();
  await page.locator('.voice [role="status"]').waitFor();
  await shot(page, 'voice');
  const contentId = page.url().match(/\/contents\/(\d+)$/)[1];
  const saved = await (await page.request.get(`${stack.base}/api/contents/${contentId}`)).json();
  assert.equal(saved.data.presets.voice, 'en+f3');
  assert.equal(saved.data.presets.speed, 1.2);
  await page.getByRole('button', { name: 'Generate images', exact: true }).click();
  await page.getByRole('button', { name: 'Generate narration', exact: true }).click();
  // The page polls the jobs while they run: pictures, players and chips appear by themselves.
  await page.waitForFunction(() => document.querySelectorAll('.scene-media img').length === 3, null, { timeout: 60_000 });
  await page.waitForFunction(() => document.querySelectorAll('.scene-media audio').length === 3, null, { timeout: 60_000 });
  await page.waitForFunction(() => document.querySelectorAll('.chip.done').length === 6, null, { timeout: 60_000 });
  // Both jobs end at 100 % (the page keeps polling until they say they are done).
  await page.waitForFunction(() => {
    const bars = [...document.querySelectorAll('.job progress')];
    return bars.length === 2 && bars.every((b) => b.value === 100);
  });
  assert.deepEqual(await page.locator('.job').evaluateAll((els) => els.map((e) => e.dataset.status)), ['completed', 'completed']);
  // The pictures load through the authorised asset route, at the 9:16 card size.
  await page.waitForFunction(() => [...document.querySelectorAll('.scene-media img')].every((i) => i.complete && i.naturalWidth === 720));
  await shot(page, 'media-done');

  // One scene alone: a new picture replaces the old one, the others stay.
  const firstPicture = () => page.locator('.scene-media img').first().getAttribute('src');
  const before = await firstPicture();
  await page.getByRole('button', { name: 'Regenerate picture' }).first().click();
  await page.waitForFunction((old) => {
    const img = document.querySelector('.scene-media img');
    return img && img.getAttribute('src') !== old && img.complete && img.naturalWidth === 720;
  }, before);
  await page.waitForFunction(() => [...document.querySelectorAll('.job')].some((j) => j.textContent.includes('The scene is done')));
  assert.equal(await page.locator('.scene-media img').count(), 3);

  // The creator's own picture for the first scene: a file that is not a picture is
  // refused with the server's words; a real one becomes the scene's picture.
  const firstScene = page.locator('li.scene').first();
  await firstScene.locator('input[name="picture"]').setInputFiles({ name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not a picture') });
  await firstScene.locator('[role="alert"]').waitFor();
  assert.match(await firstScene.locator('[role="alert"]').textContent(), /picture/);
  const secondSrc = await page.locator('.scene-media img').nth(1).getAttribute('src');
  const png = Buffer.from(await (await page.request.get(`${stack.base}${secondSrc}`)).body());
  const oldFirst = await firstPicture();
  await firstScene.locator('input[name="picture"]').setInputFiles({ name: 'mine.png', mimeType: 'image/png', buffer: png });
  await page.waitForFunction((old) => {
    const img = document.querySelector('.scene-media img');
    return img && img.getAttribute('src') !== old && img.complete && img.naturalWidth === 720;
  }, oldFirst);
  assert.equal(await firstScene.locator('[role="alert"]').count(), 0);
  await shot(page, 'own-picture');

  // Two files chosen on the second scene: a short clip for it, held on its last frame (its
  // first frame becomes the scene's picture, and the scene says what the clip does), and a
  // picture for the scene after it.
  const secondScene = page.locator('li.scene').nth(1);
  await secondScene.locator('select[name="when_shorter"]').selectOption('freeze');
  const srcOf = (i) => page.locator('.scene-media img').nth(i).getAttribute('src');
  const [oldSecond, oldThird] = [await srcOf(1), await srcOf(2)];
  await secondScene.locator('input[name="picture"]').setInputFiles([
    { name: 'clip.mp4', mimeType: 'video/mp4', buffer: clipFile() },
    { name: 'third.png', mimeType: 'image/png', buffer: png },
  ]);
  await secondScene.locator('.clip-label').waitFor({ timeout: 60_000 });
  assert.match(await secondScene.locator('.clip-label').textContent(), /Your clip · 1\.\d s · holds its last frame/);
  await page.waitForFunction(([second, third]) => {
    const imgs = document.querySelectorAll('.scene-media img');
    return [[imgs[1], second], [imgs[2], third]].every(([img, old]) =>
      img && img.getAttribute('src') !== old && img.complete && img.naturalWidth === 720);
  }, [oldSecond, oldThird]);
  assert.equal(await page.locator('li.scene').nth(2).locator('.clip-label').count(), 0, 'the third scene got the picture');
  await shot(page, 'own-clip');

  // A URL pasted on a scene goes to the same route as JSON; this one is on the server's
  // own machine, which the outbound rules refuse unless an admin allows private addresses.
  const thirdScene = page.locator('li.scene').nth(2);
  await thirdScene.locator('input[name="visual_url"]').fill(`${stack.base}/favicon.ico`);
  await thirdScene.getByRole('button', { name: 'Use URL' }).click();
  await thirdScene.locator('[role="alert"]').waitFor();
  assert.match(await thirdScene.locator('[role="alert"]').textContent(), /the URL points at a private address/);

  // Stock footage for the third scene: its visual prompt searched on Pexels (the fake's
  // stand-in), the results shown through the server with their authors, a clip used.
  assert.equal(await page.getByRole('button', { name: 'Find footage for all scenes' }).count(), 1);
  const footage = thirdScene.locator('details.footage');
  await footage.locator('summary').click();
  await footage.getByRole('button', { name: 'Search' }).click();
  await footage.locator('.stock-results li').first().waitFor({ timeout: 30_000 });
  assert.equal(await footage.locator('.stock-results li').count(), 15);
  assert.match(await footage.locator('p.muted').first().textContent(), /40 results for “.+” \(portrait\) on Pexels/);
  await page.waitForFunction(() => [...document.querySelectorAll('li.scene')[2].querySelectorAll('.stock-results img')]
    .slice(0, 3).every((i) => i.complete && i.naturalWidth === 180));
  const firstResult = footage.locator('.stock-results li').first();
  assert.match(await firstResult.textContent(), /Video by Pexels Videographer 0 on Pexels/);
  await shot(page, 'stock-search');
  const beforeStock = await srcOf(2);
  await firstResult.getByRole('button', { name: 'Use' }).click();
  await thirdScene.locator('.scene-credit').waitFor({ timeout: 60_000 });
  assert.match(await thirdScene.locator('.scene-credit').textContent(), /Video by Pexels Videographer 0 on Pexels/);
  await page.waitForFunction((old) => {
    const img = document.querySelectorAll('.scene-media img')[2];
    return img && img.getAttribute('src') !== old && img.complete && img.naturalWidth === 720;
  }, beforeStock);
  await page.locator('.video .credits', { hasText: 'Pexels Videographer 0' }).waitFor();

  // Crossfades between the scenes: saved as soon as chosen, drawn by the render.
  await page.locator('.transition-picker select[name="transition"]').selectOption('crossfade');
  await page.locator('.transition-picker', { hasText: 'Saved: the next render draws it.' }).waitFor();

  // Every scene has its picture and narration: render, then play and seek in the page.
  await page.getByRole('button', { name: 'Render video' }).click();
  await page.waitForFunction(() => [...document.querySelectorAll('.job')].some((j) => j.textContent.includes('The video is ready')), null, { timeout: 120_000 });
  const video = page.locator('section.video video');
  await video.waitFor();
  await page.waitForFunction(() => {
    const v = document.querySelector('section.video video');
    return v && v.readyState >= 1 && v.duration > 1 && v.videoWidth === 720 && v.videoHeight === 1280;
  }, null, { timeout: 30_000 });
  const middle = await video.evaluate(async (v) => {
    v.muted = true;
    await v.play();
    v.pause();
    const target = v.duration / 2;
    await new Promise((resolve) => { v.addEventListener('seeked', resolve, { once: true }); v.currentTime = target; });
    return { target, at: v.currentTime };
  });
  assert.ok(Math.abs(middle.at - middle.target) < 0.5, JSON.stringify(middle));
  await shot(page, 'video');
  const rendered = await (await page.request.get(`${stack.base}/api/contents/${contentId}`)).json();
  assert.equal(rendered.data.presets.transition, 'crossfade');
  assert.equal(rendered.data.video_out_of_date, false);

  // Background music: a file chosen in the page is stored, playable, and makes the video
  // out of date; a file that is not audio is refused with the server's words.
  await page.locator('.music input[type="file"]').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not music') });
  await page.locator('.music [role="alert"]').waitFor();
  assert.match(await page.locator('.music [role="alert"]').textContent(), /audio/i);
  await page.locator('.music input[type="file"]').setInputFiles({ name: 'tune.wav', mimeType: 'audio/wav', buffer: tone(2, 330) });
  await page.locator('.music audio').waitFor();
  await page.locator('.video .stale').waitFor();
  assert.match(await page.locator('.video .stale').textContent(), /music or the transition changed/);
  await shot(page, 'music');
  await page.getByRole('button', { name: 'Remove music' }).click();
  await page.waitForFunction(() => !document.querySelector('.music audio'));
  await page.context().close();
});

/** A one-second landscape MP4 (green, then blue) made by ffmpeg. */
function clipFile() {
  const dir = mkdtempSync(join(tmpdir(), 'crevid-clip-'));
  const path = join(dir, 'clip.mp4');
  execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'color=c=green:s=320x240:d=0.6:r=30',
    '-f', 'lavfi', '-i', 'color=c=blue:s=320x240:d=0.6:r=30',
    '-filter_complex', '[0:v][1:v]concat=n=2:v=1:a=0[v]', '-map', '[v]',
    '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', path]);
  return readFileSync(path);
}

/** A mono 16-bit WAV of a sine tone. */
function tone(seconds, hz) {
  const rate = 22050;
  const samples = seconds * rate;
  const buffer = Buffer.alloc(44 + samples * 2);
  buffer.write('RIFF', 0); buffer.writeUInt32LE(36 + samples * 2, 4); buffer.write('WAVE', 8);
  buffer.write('fmt ', 12); buffer.writeUInt32LE(16, 16); buffer.writeUInt16LE(1, 20); buffer.writeUInt16LE(1, 22);
  buffer.writeUInt32LE(rate, 24); buffer.writeUInt32LE(rate * 2, 28); buffer.writeUInt16LE(2, 32); buffer.writeUInt16LE(16, 34);
  buffer.write('data', 36); buffer.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) buffer.writeInt16LE(Math.round(Math.sin((2 * Math.PI * hz * i) / rate) * 8000), 44 + i * 2);
  return buffer;
}

test('a creator sees no admin links, and /settings sends them home', async () => {
  const page = await newPage(stack);
  await signIn(stack, page, CREATOR);
  const nav = page.locator('header nav');
  assert.equal(await nav.getByRole('link', { name: 'Settings' }).count(), 0);
  assert.equal(await nav.getByRole('link', { name: 'Users' }).count(), 0);
  assert.equal(await nav.getByRole('link', { name: 'Library' }).count(), 1);
  await page.goto(`${stack.base}/settings`);
  await page.waitForURL(`${stack.base}/`);
  await page.getByRole('heading', { name: 'Generate a script' }).waitFor();
  // Sign out acts through the hydrated app: a click before hydration would be lost.
  await page.waitForSelector('html[data-hydrated="true"]');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/\/login$/);
  await page.goto(`${stack.base}/library`);
  await page.waitForURL(/\/login\?next=%2Flibrary$|\/login\?next=\/library$/);
  await shot(page, 'login');
  await page.context().close();
});

test('errors name the problem: a too-short topic', async () => {
  const page = await newPage(stack);
  await signIn(stack, page, CREATOR);
  await page.locator('textarea[name="input"]').fill('ab');
  await page.locator('button[type="submit"]').click();
  const error = page.getByRole('alert');
  await error.waitFor();
  assert.match(await error.innerText(), /input must be at least 3 characters/);
  await page.context().close();
});

test('with the OpenAI-compatible image provider, 20 scenes fill in and the jobs page shows the job', async () => {
  // The provider draws each picture in 400 ms; the admin allows 4 at once.
  const control = stack.fakeUrl.replace(/\/v1$/, '/_fake/config');
  const configured = await fetch(control, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ image_latency_ms: 400 }) });
  assert.equal(configured.status, 200);
  const admin = await newPage(stack);
  await signIn(stack, admin, ADMIN);
  await open(admin, `${stack.base}/settings`);
  await admin.locator('select[name="image_provider"]').selectOption('openai');
  await admin.locator('input[name="image_concurrency"]').fill('4');
  await admin.getByRole('button', { name: 'Save settings' }).click();
  await admin.getByText('Settings saved.').waitFor();
  await admin.context().close();

  const page = await newPage(stack);
  await signIn(stack, page, CREATOR);
  await page.getByLabel('Use my script (offline)').check();
  const script = Array.from({ length: 20 }, (_, i) => `Fact number ${i + 1} about bees.`).join(' ');
  await page.locator('textarea[name="input"]').fill(script);
  await page.locator('details.presets summary').click();
  await page.locator('input[name="scene_count"]').fill('20');
  await page.locator('button[type="submit"]').click();
  await page.getByTestId('script').waitFor();
  await page.getByRole('button', { name: 'Save to library' }).click();
  await page.waitForURL(/\/contents\/\d+$/);
  await page.waitForSelector('html[data-hydrated="true"]');
  await page.getByRole('button', { name: 'Generate images', exact: true }).click();
  // Pictures arrive a few at a time while the job runs: some done, some not yet.
  await page.waitForFunction(() => {
    const n = document.querySelectorAll('.scene-media img').length;
    return n > 0 && n < 20;
  }, null, { timeout: 60_000 });
  await shot(page, 'provider-images-running');
  await page.waitForFunction(() => document.querySelectorAll('.scene-media img').length === 20, null, { timeout: 60_000 });
  await page.waitForFunction(() => [...document.querySelectorAll('.scene-media img')].every((i) => i.complete && i.naturalWidth === 1024 && i.naturalHeight === 1536));
  await shot(page, 'provider-images-done');

  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  await page.waitForURL(/\/jobs$/);
  const job = page.locator('.job').first();
  await job.locator('.chip.done').nth(19).waitFor();
  assert.equal(await job.locator('.chip').count(), 20);
  assert.equal(await job.locator('progress').evaluate((p) => p.value), 100);
  await job.getByText('All 20 scenes done').waitFor();
  await shot(page, 'jobs');
  await page.context().close();
});

test('a creator adds a webhook, sees its signed delivery and redelivers it', async () => {
  // The receiver: records each call and resolves the waiter for its count.
  const got = [];
  const waiters = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      got.push({ headers: req.headers, body });
      res.writeHead(204).end();
      waiters.filter((w) => got.length >= w.n).forEach((w) => w.resolve());
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const received = (n) => new Promise((resolve) => {
    if (got.length >= n) resolve(); else waiters.push({ n, resolve });
  });
  const url = `http://127.0.0.1:${server.address().port}/hooks/crevid`;

  // Webhook URLs, like pasted ones, reach this machine only once the admin allows it.
  const admin = await newPage(stack);
  await signIn(stack, admin, ADMIN);
  await open(admin, `${stack.base}/settings`);
  await admin.locator('input[name="allowed_private_addresses"]').fill('127.0.0.0/8');
  await admin.getByRole('button', { name: 'Save settings' }).click();
  await admin.getByText('Settings saved.').waitFor();
  await admin.context().close();

  const page = await newPage(stack);
  await signIn(stack, page, CREATOR);
  await open(page, `${stack.base}/webhooks`);
  await page.locator('input[name="webhook_url"]').fill(url);
  await page.locator('input[name="webhook_description"]').fill('Tell the archive');
  for (const event of ['job.completed', 'job.failed', 'video.ready']) {
    await page.locator(`input[name="webhook_event"][value="${event}"]`).uncheck();
  }
  await page.getByRole('button', { name: 'Add endpoint' }).click();
  const secret = (await page.getByTestId('webhook-secret').locator('code').innerText()).trim();
  assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
  const endpoint = page.getByTestId('webhook');
  await endpoint.getByText(url).waitFor();
  assert.match(await endpoint.innerText(), /content\.deleted · added/);

  // A content saved and deleted through the API, as the page's own session.
  const deletedId = await page.evaluate(async () => {
    const post = (path, body) => fetch(path, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    }).then((r) => r.json());
    const input = 'Tides rise twice a day. The moon pulls the sea.';
    const script = await post('/api/content/generate', { mode: 'script', input });
    const saved = await post('/api/contents', { mode: 'script', input, script: script.data });
    await fetch(`/api/contents/${saved.data.id}`, { method: 'DELETE' });
    return saved.data.id;
  });
  await received(1);
  const [first] = got;
  const body = JSON.parse(first.body);
  assert.equal(body.type, 'content.deleted');
  assert.equal(body.data.content_id, deletedId);
  // Signed as Standard Webhooks specify: v1, base64 HMAC-SHA256 of "id.timestamp.body".
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const signed = `${first.headers['webhook-id']}.${first.headers['webhook-timestamp']}.${first.body}`;
  const expected = `v1,${createHmac('sha256', key).update(signed).digest('base64')}`;
  assert.equal(first.headers['webhook-signature'], expected);

  await endpoint.getByRole('button', { name: 'Deliveries' }).click();
  const row = page.getByTestId('delivery');
  await row.getByText('succeeded').waitFor();
  assert.match(await row.innerText(), /content\.deleted\s+succeeded\s+1\s+204/);
  await page.getByRole('button', { name: 'Redeliver' }).click();
  await received(2);
  assert.equal(got[1].headers['webhook-id'], first.headers['webhook-id']);
  assert.equal(got[1].body, first.body);
  // The list follows the pending redelivery by itself.
  await page.waitForFunction(() => /succeeded\s+2\s+204/.test(document.querySelector('[data-testid="delivery"]')?.innerText ?? ''));
  await shot(page, 'webhooks');
  server.close();
  await page.context().close();
});

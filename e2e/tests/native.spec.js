// Interop: the native peer (target/release/swarm-peer, webrtc-rs) and Chromium pages in the
// same rooms, through the same signalling server and peer wire protocol.
import { test, expect, joinRoom, helpers, share } from './harness.js';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PEER = path.join(root, 'target/release/swarm-peer');
const MiB = 1024 * 1024;

test.describe.configure({ timeout: 180_000 });

let dir;
test.beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'swarm-native-')); });
test.afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The bytes the pages' `makeBlob(size, seed)` makes (the same xorshift, little-endian). */
function randomBytes(size, seed) {
  const bytes = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  const words = Math.floor(size / 4);
  for (let i = 0; i < words; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    bytes.writeUInt32LE(x >>> 0, i * 4);
  }
  for (let i = words * 4; i < size; i++) bytes[i] = i & 0xff;
  return bytes;
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** Runs `swarm-peer seed FILE` in `room`; resolves once it printed the content id. */
async function nativeSeed(server, room, file, extra = []) {
  // Its log at debug level, printed if the test fails (see `download`).
  const env = { ...process.env, SWARM_LOG: 'warn,swarm_peer=debug,rtc_ice=error,rtc=error' };
  const child = spawn(PEER, ['seed', file, '--server', server.url, '--room', room, ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  let err = '';
  child.stderr.on('data', (chunk) => { err += chunk; });
  const seeder = await new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const [id, size, name, link] = out.split('\n')[0].split('\t');
      if (out.includes('\n')) resolve({ id, size: Number(size), name, link });
    });
    child.on('exit', (code) => reject(new Error(`swarm-peer seed exited with ${code}: ${err}`)));
  });
  // Its own id, from the line it prints once everything is shared.
  await expect.poll(() => /as ([0-9a-f]{32})/.exec(err)?.[1], { timeout: 10_000 }).toBeTruthy();
  seeder.peer = /as ([0-9a-f]{32})/.exec(err)[1];
  seeder.log = () => err;
  seeder.stop = () => new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.on('exit', resolve);
    child.kill('SIGTERM');
  });
  return seeder;
}

/** Runs `swarm-peer get ID -o OUT` to its end; resolves with its exit code and output. */
function nativeGet(server, room, id, output) {
  const child = spawn(PEER, ['get', id, '-o', output, '--server', server.url, '--room', room], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => { stdout += chunk; });
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
}

/**
 * Downloads `id` on `member` once a peer offers it; resolves with {size, hash, from}. If it has
 * not finished within `timeout`, prints the page's log, its progress and peers, and the native
 * seeders' logs, then fails.
 */
async function download(member, id, seeders = [], timeout = 120_000) {
  await helpers(member);
  const logs = [];
  member.page.on('console', (msg) => logs.push(`[${member.label}] ${msg.text()}`));
  await member.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), id, { timeout: 30_000 });
  const got = await member.page.evaluate(async ({ id, timeout }) => {
    const dl = window.swarm.download(id);
    window.lastProgress = dl.progress;
    dl.on('progress', (p) => { window.lastProgress = p; });
    const late = new Promise((resolve) => setTimeout(resolve, timeout, null));
    const blob = await Promise.race([dl.blob(), late]);
    if (!blob) return null;
    return { size: blob.size, hash: await window.sha256(blob), from: window.lastProgress.from };
  }, { id, timeout });
  if (got) return got;
  const state = await member.page.evaluate(() => ({ progress: window.lastProgress, peers: window.swarm.peers(), files: window.swarm.files() }));
  console.log(`download stalled: ${JSON.stringify(state)}`);
  console.log(logs.join('\n'));
  for (const seeder of seeders) console.log(`native seeder ${seeder.peer}:\n${seeder.log()}`);
  throw new Error(`the download of ${id} did not finish within ${timeout} ms`);
}

test('a browser downloads a 20 MiB file the native peer seeds, byte-identical', async ({ browser, server }) => {
  const bytes = randomBytes(20 * MiB, 21);
  const file = path.join(dir, 'random.bin');
  fs.writeFileSync(file, bytes);
  const seeder = await nativeSeed(server, 'native-seeds', file);
  expect(seeder).toMatchObject({ size: 20 * MiB, name: 'random.bin' });
  expect(seeder.link).toBe(`${server.url}/#native-seeds/${seeder.id}`);

  const page = await joinRoom(browser, server, 'native-seeds');
  const listed = await (async () => {
    await page.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id), seeder.id, { timeout: 30_000 });
    return page.page.evaluate((id) => window.swarm.files().find((f) => f.id === id), seeder.id);
  })();
  expect(listed).toMatchObject({ name: 'random.bin', size: 20 * MiB, mime: 'application/octet-stream', sources: 1 });
  const got = await download(page, seeder.id, [seeder]);
  expect(got.size).toBe(20 * MiB);
  expect(got.hash).toBe(sha256(bytes));
  expect(Object.keys(got.from)).toEqual([seeder.peer]);
  await seeder.stop();
});

test('in a secret room with signatures required, a browser downloads what the native peer seeds', async ({ browser, server }) => {
  const bytes = randomBytes(6 * MiB, 22);
  const file = path.join(dir, 'secret.bin');
  fs.writeFileSync(file, bytes);
  const secret = 'n4tIve-s3cret_Kq81';
  const seeder = await nativeSeed(server, 'hidden', file, ['--secret', secret, '--require-signed']);
  // Its link opens the same secret room in the page.
  expect(seeder.link).toBe(`${server.url}/#hidden/${seeder.id}?k=${secret}`);
  const page = await joinRoom(browser, server, 'hidden', 'hidden', { requireSigned: true, secret });
  const got = await download(page, seeder.id, [seeder]);
  expect(got.hash).toBe(sha256(bytes));
  expect(Object.keys(got.from)).toEqual([seeder.peer]);
  // Nobody in the room the name alone opens.
  const outsider = await joinRoom(browser, server, 'hidden', 'outsider');
  await outsider.page.waitForTimeout(1500);
  expect(await outsider.page.evaluate(() => window.swarm.members())).toEqual([]);
  await seeder.stop();
});

test('the native peer downloads a 20 MiB file a browser seeds, byte-identical', async ({ browser, server }) => {
  const page = await joinRoom(browser, server, 'browser-seeds');
  const file = await share(page, 20 * MiB, 22);
  const output = path.join(dir, 'fetched.bin');
  const result = await nativeGet(server, 'browser-seeds', file.id, output);
  expect(result.code, result.stderr).toBe(0);
  expect(result.stdout).toContain(`saved ${output} (${20 * MiB} bytes, ${file.id})`);
  expect(sha256(fs.readFileSync(output))).toBe(file.hash);
  expect(fs.existsSync(`${output}.swarm-part`)).toBe(false);
});

test('a native seeder and a browser seeder both serve a third browser', async ({ browser, server }) => {
  const room = 'mixed-seeders';
  const bytes = randomBytes(20 * MiB, 23);
  const file = path.join(dir, 'random.bin');
  fs.writeFileSync(file, bytes);
  const seeder = await nativeSeed(server, room, file);
  const a = await joinRoom(browser, server, room, 'browser-seeder');
  expect((await share(a, 20 * MiB, 23)).id).toBe(seeder.id);
  const c = await joinRoom(browser, server, room, 'downloader');
  await c.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources === 2), seeder.id, { timeout: 30_000 });
  const got = await download(c, seeder.id, [seeder]);
  expect(got).toMatchObject({ size: 20 * MiB, hash: sha256(bytes) });
  expect(Object.keys(got.from).sort()).toEqual([a.id, seeder.peer].sort());
  // Each sent piece data (how much depends on how busy each is; in the end game a piece may
  // come partly from one and be finished by the other, so not always a whole piece each).
  for (const id of [a.id, seeder.peer]) expect(got.from[id]).toBeGreaterThan(0);
  await seeder.stop();
});

test('the native peer exits non-zero with a clear message when nobody offers the file', async ({ server }) => {
  const output = path.join(dir, 'never.bin');
  const absent = 'cd'.repeat(32);
  const child = spawn(PEER, ['get', absent, '--wait', '1', '-o', output, '--server', server.url, '--room', 'empty'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  const code = await new Promise((resolve) => child.on('exit', resolve));
  expect(code).toBe(1);
  expect(stderr).toContain(`no peer in room empty offers content ${absent}`);
  expect(fs.existsSync(output)).toBe(false);
});

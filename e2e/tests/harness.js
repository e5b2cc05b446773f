// Shared test fixtures: a real signal-server per test, and pages that join rooms through the
// public Swarm API.
import { test as base, expect } from '@playwright/test';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Starts target/release/signal-server on a free loopback port (or `listen`), with extra flags
 * `args`. `restart()` starts it again on the same address after `stop()` or `kill()`.
 */
export async function startServer(args = [], listen = '127.0.0.1:0') {
  const child = spawn(
    path.join(root, 'target/release/signal-server'),
    ['--listen', listen, '--www', path.join(root, 'www'), ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } },
  );
  child.stderr.on('data', (chunk) => process.stderr.write(`[server] ${chunk}`));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('signal-server did not start in 10 s')), 10_000);
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const match = out.match(/listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`signal-server exited with ${code}`)));
  });
  const server = {
    url,
    child,
    /** Graceful shutdown (SIGTERM): clients are closed with 1001. */
    async stop() {
      if (server.child.exitCode !== null || server.child.signalCode !== null) return;
      const exited = once(server.child, 'exit');
      server.child.kill('SIGTERM');
      await exited;
    },
    /** Killed outright (SIGKILL), as by a crash: no close frames. */
    async kill() {
      if (server.child.exitCode !== null || server.child.signalCode !== null) return;
      const exited = once(server.child, 'exit');
      server.child.kill('SIGKILL');
      await exited;
    },
    /** Starts the server again on the same address. */
    async restart() {
      const again = await startServer(args, new URL(url).host);
      server.child = again.child;
    },
  };
  return server;
}

export const test = base.extend({
  // A fresh server for every test, so tests cannot see each other's rooms.
  server: async ({}, use) => {
    const server = await startServer();
    await use(server);
    await server.stop();
  },
  // Every page a test opens, through any helper or its own `browser.newContext()`, is watched:
  // an uncaught page error (a WebAssembly panic shows as `RuntimeError: unreachable`) or a Rust
  // panic message on the console fails the test, once, here. Then every page is closed, so
  // cameras and transfers of one test do not take the CPU of the next (the browser is shared by
  // the tests of a worker).
  pageErrors: [async ({ browser }, use, testInfo) => {
    const errors = [];
    const watchContext = (context) => {
      const watchPage = (page) => {
        page.on('pageerror', (err) => errors.push(`${page.url()}: page error: ${err.message}`));
        page.on('console', (msg) => {
          if (/panicked at/.test(msg.text())) errors.push(`${page.url()}: ${msg.text()}`);
        });
      };
      context.pages().forEach(watchPage);
      context.on('page', watchPage);
    };
    browser.contexts().forEach(watchContext);
    const newContext = browser.newContext;
    browser.newContext = async (...args) => {
      const context = await newContext.apply(browser, args);
      watchContext(context);
      return context;
    };
    try {
      await use(errors);
    } finally {
      browser.newContext = newContext;
      await Promise.all(browser.contexts().map((context) => context.close()));
    }
    if (testInfo.status === testInfo.expectedStatus) {
      expect(errors, 'uncaught page errors').toEqual([]);
    }
  }, { auto: true }],
});

export { expect };

/** Forwards a page's errors to the test output. */
function watch(page, label) {
  page.on('pageerror', (err) => console.log(`[${label}] page error: ${err.message}`));
  page.on('console', (msg) => {
    // A refused reconnection attempt while a test has the server down is expected.
    if (msg.type() === 'error' && !/WebSocket connection to .* failed/.test(msg.text())) console.log(`[${label}] ${msg.text()}`);
  });
}

/**
 * Runs in a page (of any browser: it is passed as source): joins `room` with
 * `Swarm.join(location.origin, room, options)` and records every event the swarm emits in
 * `window.events`. Returns the page's peer id.
 */
export async function joinInPage({ room, options }) {
  const { default: init, Swarm } = await import('/pkg/client_wasm.js');
  await init();
  const swarm = await Swarm.join(location.origin, room, options);
  window.swarm = swarm;
  window.events = [];
  swarm.on('peer-joined', (id) => window.events.push({ type: 'peer-joined', id, at: performance.now() }));
  swarm.on('peer-left', (id) => window.events.push({ type: 'peer-left', id, at: performance.now() }));
  swarm.on('peer-rejected', (id, reason) => window.events.push({ type: 'peer-rejected', id, reason }));
  window.remoteStreams = {};
  swarm.on('stream', (peer, stream) => {
    window.remoteStreams[stream.id] = stream;
    // A sink, so the browser decodes the video.
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.srcObject = stream;
    video.dataset.stream = stream.id;
    document.body.append(video);
    window.events.push({ type: 'stream', peer, id: stream.id, kinds: stream.getTracks().map((t) => t.kind).sort() });
  });
  swarm.on('stream-ended', (peer, id) => window.events.push({ type: 'stream-ended', peer, id }));
  swarm.on('server', (state) => window.events.push({ type: 'server', state, at: performance.now() }));
  swarm.on('message', (from, data) => window.events.push({
    type: 'message',
    from,
    kind: typeof data === 'string' ? 'string' : data.constructor.name,
    data: typeof data === 'string' ? data : Array.from(data),
  }));
  return swarm.id;
}

/**
 * Opens a page (its own browser context, like a separate user) on the server's lobby and joins
 * `room` with `Swarm.join(location.origin, room, options)`. Every event the swarm emits is
 * recorded in `window.events`.
 */
export async function joinRoom(browser, server, room, label = room, options = undefined) {
  const context = await browser.newContext();
  const page = await context.newPage();
  watch(page, label);
  await page.goto(`${server.url}/`);
  const id = await page.evaluate(joinInPage, { room, options });
  return { page, context, id, label };
}

/** Waits until `member` has an open data channel to exactly `ids`. */
export async function waitForPeers(member, ids, timeout = 20_000) {
  const expected = [...ids].sort();
  await member.page.waitForFunction(
    (expected) => JSON.stringify(window.swarm.peers()) === JSON.stringify(expected),
    expected,
    { timeout },
  );
}

/** The events `member` has recorded so far. */
export function events(member) {
  return member.page.evaluate(() => window.events);
}

/** Calls `fn` on the page and returns `{name, code, message}` of what it throws. */
export async function thrown(member, fn, arg) {
  return member.page.evaluate(async ({ source, arg }) => {
    try {
      // eslint-disable-next-line no-new-func
      await new Function('arg', `return (${source})(arg);`)(arg);
      return null;
    } catch (err) {
      return { name: err.name, code: err.code, message: err.message };
    }
  }, { source: fn.toString(), arg });
}

/**
 * Makes a VP8 + Opus WebM test video (which this Chromium decodes) with ffmpeg at
 * `e2e/artifacts/<name>`, once per checkout; returns its path.
 */
export function makeClip(name, { size = '640x360', pattern = 'testsrc', seconds = 60, bitrate = '1500k', cuesToFront = false } = {}) {
  const clip = path.join(root, 'e2e/artifacts', name);
  if (!fs.existsSync(clip)) {
    fs.mkdirSync(path.dirname(clip), { recursive: true });
    execFileSync('ffmpeg', [
      '-y', '-loglevel', 'error',
      '-f', 'lavfi', '-i', `${pattern}=size=${size}:rate=30`,
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-t', String(seconds), '-c:v', 'libvpx', '-b:v', bitrate, '-minrate', bitrate, '-maxrate', bitrate,
      '-deadline', 'realtime', '-cpu-used', '8', '-c:a', 'libopus', '-shortest',
      '-cues_to_front', cuesToFront ? '1' : '0', `${clip}.tmp.webm`,
    ]);
    fs.renameSync(`${clip}.tmp.webm`, clip);
  }
  return clip;
}

/**
 * The 60 s clip the streaming tests share, with its index (cues) at the front as a file made
 * for streaming has it: with the index at the end, Chromium first fetches the end of the file
 * and then walks back from there on a seek, piece after piece.
 */
export function testClip() {
  return makeClip('clip-streamable.webm', { cuesToFront: true });
}

/** Joins `count` pages to `room` (with join `options`) and waits for the full mesh. */
export async function mesh(browser, server, room, count, options = undefined) {
  const members = [];
  for (let i = 0; i < count; i++) members.push(await joinRoom(browser, server, room, `${room}-${i}`, options));
  for (const m of members) await waitForPeers(m, members.filter((o) => o !== m).map((o) => o.id));
  return members;
}

/** Installs page helpers: deterministic pseudo-random blobs and SHA-256 of blobs. */
export async function helpers(member) {
  await member.page.evaluate(() => {
    window.makeBlob = (size, seed) => {
      const bytes = new Uint8Array(size);
      const words = new Uint32Array(bytes.buffer, 0, Math.floor(size / 4));
      let x = seed >>> 0 || 1;
      for (let i = 0; i < words.length; i++) {
        x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
        words[i] = x >>> 0;
      }
      for (let i = words.length * 4; i < size; i++) bytes[i] = i & 0xff;
      return new Blob([bytes], { type: 'application/octet-stream' });
    };
    window.sha256 = async (blob) => {
      const bytes = new Uint8Array(await blob.arrayBuffer());
      if (!window.crypto.subtle) {
        // An insecure context has no SHA-256: two FNV-1a sums and the length tell files apart
        // well enough to compare a download with its original, both hashed the same way.
        let [x, y] = [0x811c9dc5, 0x01000193 ^ 0x5bd1e995];
        for (let i = 0; i < bytes.length; i++) {
          x = Math.imul(x ^ bytes[i], 0x01000193);
          y = Math.imul(y ^ bytes[i] ^ (i & 0xff), 0x01000193);
        }
        return `fnv:${(x >>> 0).toString(16)}:${(y >>> 0).toString(16)}:${bytes.length}`;
      }
      const digest = await crypto.subtle.digest('SHA-256', bytes);
      return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
    };
  });
}

/** Shares a generated file from `member`; returns {id, hash}. */
export async function share(member, size, seed) {
  await helpers(member);
  return member.page.evaluate(async ([size, seed]) => {
    const blob = window.makeBlob(size, seed);
    const id = await window.swarm.shareFile(new File([blob], 'random.bin', { type: blob.type }));
    return { id, hash: await window.sha256(blob) };
  }, [size, seed]);
}

/**
 * Starts downloading `id` on `member` once a peer offers it. Progress goes to
 * `window.lastProgress`, bad-peer reports to `window.badPeers`, and the outcome to
 * `window.result`: `{ ok: true, size, hash }` or `{ ok: false, name, code, message }`.
 */
export async function startDownload(member, id) {
  await helpers(member);
  await member.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), id, { timeout: 20_000 });
  await member.page.evaluate((id) => {
    const dl = window.swarm.download(id);
    window.dl = dl;
    window.badPeers = [];
    window.lastProgress = dl.progress;
    dl.on('progress', (p) => { window.lastProgress = p; });
    dl.on('bad-peer', (peer, reason) => window.badPeers.push({ peer, reason }));
    window.result = dl.blob().then(
      async (blob) => ({ ok: true, size: blob.size, hash: await window.sha256(blob) }),
      (err) => ({ ok: false, name: err.name, code: err.code, message: err.message }),
    );
  }, id);
}

/** The outcome of the download `startDownload` began; throws after `timeout` ms. */
export async function outcome(member, timeout = 90_000) {
  return member.page.evaluate((timeout) => Promise.race([
    window.result,
    new Promise((_, reject) => setTimeout(() => reject(new Error('download did not end')), timeout)),
  ]), timeout);
}

/** The `{ size, hash }` of the download `startDownload` began; throws if it failed. */
export async function finish(member, timeout = 90_000) {
  const result = await outcome(member, timeout);
  if (!result.ok) throw new Error(`download failed: ${result.code}: ${result.message}`);
  return { size: result.size, hash: result.hash };
}

/** Waits until `member` keeps `id` with its pieces checked; returns its `stored()` entry. */
export async function kept(member, id) {
  await member.page.waitForFunction(
    (id) => window.swarm.stored().some((f) => f.id === id && f.available),
    id,
    { timeout: 30_000 },
  );
  return member.page.evaluate((id) => window.swarm.stored().find((f) => f.id === id), id);
}

/** Starts `download(id)` on `member` at once (no source needed: a kept download resumes). */
export async function resume(member, id) {
  return member.page.evaluate((id) => {
    const dl = window.swarm.download(id);
    window.dl = dl;
    window.firstProgress = dl.progress;
    window.progressEvents = [];
    dl.on('progress', (p) => window.progressEvents.push(p));
    window.result = dl.blob().then(
      async (blob) => ({ ok: true, size: blob.size, hash: await window.sha256(blob) }),
      (err) => ({ ok: false, name: err.name, code: err.code, message: err.message }),
    );
    return new Promise((resolve) => dl.on('progress', (p) => resolve(p.received)));
  }, id);
}

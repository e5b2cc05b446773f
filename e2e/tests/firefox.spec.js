// Firefox and Chromium in one room. Chromium pages come from Playwright, as in the other specs;
// Firefox pages come from Debian's `firefox-esr`, driven over WebDriver BiDi by puppeteer-core
// (Playwright drives only its own patched Firefox builds, which cannot be downloaded here).
// A fresh Firefox with a fresh profile is launched for each test; its pages load from the
// test's server inside the test network namespace, like the Chromium pages.
import crypto from 'node:crypto';
import fs from 'node:fs';
import puppeteer from 'puppeteer-core';
import {
  test as base, expect, joinRoom, joinInPage, waitForPeers, events, helpers, share, startDownload, finish, testClip, kept, resume,
} from './harness.js';

const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';
const MiB = 1024 * 1024;

const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');

/** Preferences on top of puppeteer's own test profile. */
const FIREFOX_PREFS = {
  // WebRTC: host candidates as plain IPs (not mDNS `.local` names, which Chromium in another
  // process may not resolve), loopback candidates allowed too.
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.peerconnection.ice.loopback': true,
  // A fake camera (moving colour frames) and microphone (a tone), granted without asking.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // Media may play without a user gesture.
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  // Background services that would only try the network (there is none in the namespace).
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'network.trr.mode': 5,
  'dom.push.connection.enabled': false,
  'toolkit.telemetry.enabled': false,
  'datareporting.usage.uploadEnabled': false,
  'extensions.systemAddon.update.enabled': false,
  'browser.region.network.url': '',
  'app.update.auto': false,
};

/**
 * A puppeteer page behind the two Playwright `Page` methods the harness helpers use
 * (`evaluate(fn, arg)` and `waitForFunction(fn, arg, { timeout, polling })`), so
 * `waitForPeers`, `events`, `share`, `startDownload` and `finish` work on Firefox members too.
 */
function adapt(page) {
  return {
    puppeteer: page,
    url: () => page.url(),
    evaluate: (fn, arg) => page.evaluate(fn, arg),
    waitForFunction: (fn, arg, { timeout = 10_000, polling = 100 } = {}) =>
      page.waitForFunction(fn, { timeout, polling: polling === 'raf' ? 100 : polling }, arg),
  };
}

const test = base.extend({
  // `firefox.join(server, room, label)` opens a Firefox page that joins `room` as `joinRoom`
  // does. An uncaught page error or a Rust panic on the console of any Firefox page fails the
  // test, as the harness does for Chromium pages.
  firefox: async ({}, use, testInfo) => {
    const errors = [];
    const started = Date.now();
    const browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: FIREFOX,
      headless: true,
      extraPrefsFirefox: FIREFOX_PREFS,
      protocolTimeout: 120_000,
      timeout: 30_000,
    });
    testInfo.annotations.push({ type: 'firefox', description: `${await browser.version()}, launched in ${Date.now() - started} ms` });
    const firefox = {
      browser,
      errors,
      async join(server, room, label = room) {
        // Its own user context (container), like the separate Playwright contexts.
        const context = await browser.createBrowserContext();
        const page = await context.newPage();
        page.on('pageerror', (err) => errors.push(`${label}: page error: ${err.message}`));
        page.on('console', (msg) => {
          const text = msg.text();
          if (/panicked at/.test(text)) errors.push(`${label}: ${text}`);
          if (msg.type() === 'error' && !/WebSocket connection to .* failed/.test(text)) console.log(`[${label}] ${text}`);
        });
        await page.goto(`${server.url}/`, { timeout: 20_000 });
        const member = { page: adapt(page), context, label };
        member.id = await member.page.evaluate(joinInPage, { room, options: undefined });
        return member;
      },
    };
    try {
      await use(firefox);
    } finally {
      // Bounded: a wedged browser is killed.
      const closed = browser.close().then(() => true, () => false);
      const inTime = await Promise.race([closed, new Promise((resolve) => setTimeout(() => resolve(false), 10_000))]);
      if (!inTime) browser.process()?.kill('SIGKILL');
    }
    if (testInfo.status === testInfo.expectedStatus) {
      expect(errors, 'uncaught page errors in Firefox').toEqual([]);
    }
  },
});

/** A Chromium page and a Firefox page in `room`, connected to each other. */
async function pair(browser, firefox, server, room) {
  const chromium = await joinRoom(browser, server, room, `${room}-chromium`);
  const gecko = await firefox.join(server, room, `${room}-firefox`);
  await waitForPeers(chromium, [gecko.id]);
  await waitForPeers(gecko, [chromium.id]);
  return [chromium, gecko];
}

/** Waits until `member` got the message `text` from `from`. */
async function expectMessage(member, from, text) {
  await member.page.waitForFunction(
    ([from, text]) => window.events.some((e) => e.type === 'message' && e.from === from && e.data === text),
    [from, text],
    { timeout: 10_000 },
  );
}

/** Opens the fake camera and microphone on `member` and publishes them; returns the stream id. */
async function publishCamera(member) {
  return member.page.evaluate(async () => {
    window.local = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    await window.swarm.publish(window.local);
    return window.local.id;
  });
}

/**
 * Waits until `member` receives `streamId` from `from` and plays it: the `stream` event fired
 * with an audio and a video track, the connection's stats show decoded video frames and received
 * audio packets, and the page's <video> sink has a picture and its clock advances.
 */
async function expectPlaying(member, from, streamId) {
  await member.page.waitForFunction(
    ([peer, id]) => window.events.some((e) => e.type === 'stream' && e.peer === peer && e.id === id),
    [from, streamId],
    { timeout: 20_000 },
  );
  expect((await events(member)).filter((e) => e.type === 'stream')).toEqual([
    { type: 'stream', peer: from, id: streamId, kinds: ['audio', 'video'] },
  ]);
  await member.page.waitForFunction(async (from) => {
    const report = await window.swarm.getStats(from);
    let frames = 0;
    let audio = 0;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
      if (s.type === 'inbound-rtp' && s.kind === 'audio') audio += s.packetsReceived || 0;
    });
    return frames > 0 && audio > 0;
  }, from, { timeout: 30_000, polling: 250 });
  const sink = await member.page.evaluate(async (id) => {
    const video = document.querySelector(`video[data-stream="${id}"]`);
    const before = video.currentTime;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    return {
      before,
      after: video.currentTime,
      paused: video.paused,
      width: video.videoWidth,
      height: video.videoHeight,
      audioLive: video.srcObject.getAudioTracks().map((t) => t.readyState),
    };
  }, streamId);
  expect(sink.paused).toBe(false);
  expect(sink.width).toBeGreaterThan(0);
  expect(sink.height).toBeGreaterThan(0);
  expect(sink.after).toBeGreaterThan(sink.before);
  expect(sink.audioLive).toEqual(['live']);
}

test('a Firefox page and a Chromium page chat both ways, and a second Firefox page joins them', async ({ browser, firefox, server }) => {
  test.setTimeout(60_000);
  const [chromium, gecko] = await pair(browser, firefox, server, 'ff-chat');
  const agent = await gecko.page.evaluate(() => navigator.userAgent);
  expect(agent).toContain('Firefox/');

  await chromium.page.evaluate((id) => window.swarm.send(id, 'hello from chromium'), gecko.id);
  await expectMessage(gecko, chromium.id, 'hello from chromium');
  await gecko.page.evaluate((id) => window.swarm.send(id, 'hello from firefox'), chromium.id);
  await expectMessage(chromium, gecko.id, 'hello from firefox');

  // Bytes too, and a broadcast.
  await gecko.page.evaluate((id) => window.swarm.send(id, new Uint8Array([0, 1, 254, 255])), chromium.id);
  await chromium.page.waitForFunction(
    (from) => window.events.some((e) => e.type === 'message' && e.from === from && e.kind === 'Uint8Array'),
    gecko.id,
    { timeout: 10_000 },
  );
  expect((await events(chromium)).find((e) => e.kind === 'Uint8Array')).toMatchObject({ from: gecko.id, data: [0, 1, 254, 255] });
  expect(await chromium.page.evaluate(() => window.swarm.broadcast('to all'))).toBe(1);
  await expectMessage(gecko, chromium.id, 'to all');
  expect((await events(gecko)).filter((e) => e.type === 'peer-joined').map((e) => e.id)).toEqual([chromium.id]);

  // Firefox to Firefox: a second Firefox page (its own user context) makes a mesh of three.
  const gecko2 = await firefox.join(server, 'ff-chat', 'ff-chat-firefox-2');
  await waitForPeers(gecko2, [chromium.id, gecko.id]);
  await waitForPeers(gecko, [chromium.id, gecko2.id]);
  await waitForPeers(chromium, [gecko.id, gecko2.id]);
  await gecko2.page.evaluate((id) => window.swarm.send(id, 'firefox to firefox'), gecko.id);
  await expectMessage(gecko, gecko2.id, 'firefox to firefox');
  expect(await gecko.page.evaluate(() => window.swarm.broadcast('from firefox to all'))).toBe(2);
  await expectMessage(chromium, gecko.id, 'from firefox to all');
  await expectMessage(gecko2, gecko.id, 'from firefox to all');
});

test('a file shared by either browser arrives byte-identical in the other', async ({ browser, firefox, server }) => {
  test.setTimeout(150_000);
  const [chromium, gecko] = await pair(browser, firefox, server, 'ff-files');
  // A regular (not private) Firefox window in a secure context stores in OPFS, as Chromium does.
  expect(await gecko.page.evaluate(() => window.swarm.storage)).toBe('opfs');
  expect(await chromium.page.evaluate(() => window.swarm.storage)).toBe('opfs');
  const size = 20 * MiB;
  for (const [from, to, seed] of [[chromium, gecko, 11], [gecko, chromium, 12]]) {
    const file = await share(from, size, seed);
    const started = Date.now();
    await startDownload(to, file.id);
    expect(await finish(to, 60_000)).toEqual({ size, hash: file.hash });
    const seconds = (Date.now() - started) / 1000;
    console.log(`${from.label} -> ${to.label}: ${size / MiB} MiB in ${seconds.toFixed(1)} s (${(size / MiB / seconds).toFixed(1)} MiB/s)`);
    const listed = await to.page.evaluate((id) => window.swarm.files().find((f) => f.id === id), file.id);
    expect(listed).toMatchObject({ name: 'random.bin', size, complete: true });
    expect(Object.keys(await to.page.evaluate(() => window.lastProgress.from))).toEqual([from.id]);
  }
});

test('a download in Firefox reloaded half-way resumes from what it kept', async ({ browser, firefox, server }) => {
  test.setTimeout(120_000);
  const [chromium, gecko] = await pair(browser, firefox, server, 'ff-resume');
  const size = 24 * MiB;
  const file = await share(chromium, size, 21);
  await chromium.page.evaluate(() => window.swarm._capUpload(6 * 1024 * 1024));
  await startDownload(gecko, file.id);
  await gecko.page.waitForFunction(() => window.lastProgress.received >= 8 * 1024 * 1024, null, { timeout: 60_000 });
  await gecko.page.puppeteer.reload();
  gecko.id = await gecko.page.evaluate(joinInPage, { room: 'ff-resume', options: undefined });
  await helpers(gecko);
  const entry = await kept(gecko, file.id);
  expect(entry).toMatchObject({ complete: false, kind: 'download', available: true });
  expect(entry.received).toBeGreaterThanOrEqual(8 * MiB);
  await gecko.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), file.id, { timeout: 20_000 });
  expect(await resume(gecko, file.id)).toBe(entry.received);
  expect(await finish(gecko, 60_000)).toEqual({ size, hash: file.hash });
  const fetched = await gecko.page.evaluate(() => Object.values(window.dl.progress.from).reduce((a, n) => a + n, 0));
  expect(fetched).toBeLessThanOrEqual(size - entry.received + 2 * MiB);
});

test('a camera and microphone published by either browser play in the other', async ({ browser, firefox, server }) => {
  test.setTimeout(120_000);
  const [chromium, gecko] = await pair(browser, firefox, server, 'ff-media');
  const fromChromium = await publishCamera(chromium);
  await expectPlaying(gecko, chromium.id, fromChromium);
  const fromFirefox = await publishCamera(gecko);
  await expectPlaying(chromium, gecko.id, fromFirefox);

  // Unpublishing ends the stream on the other side, both ways.
  for (const [member, other, id] of [[chromium, gecko, fromChromium], [gecko, chromium, fromFirefox]]) {
    await member.page.evaluate(() => window.swarm.unpublish(window.local));
    await other.page.waitForFunction(
      ([peer, id]) => window.events.some((e) => e.type === 'stream-ended' && e.peer === peer && e.id === id),
      [member.id, id],
      { timeout: 20_000 },
    );
  }
  // The data channel is untouched by the renegotiations.
  await gecko.page.evaluate((id) => window.swarm.send(id, 'after media'), chromium.id);
  await expectMessage(chromium, gecko.id, 'after media');
});

test('Firefox plays a video shared by Chromium while it downloads, and seeks', async ({ browser, firefox, server }) => {
  test.setTimeout(150_000);
  const clip = testClip();
  const [chromium, gecko] = await pair(browser, firefox, server, 'ff-movie');
  await helpers(gecko);
  const supported = await gecko.page.evaluate(() => document.createElement('video').canPlayType('video/webm; codecs="vp8, opus"'));
  expect(supported).not.toBe('');

  await chromium.page.evaluate(() => {
    const input = document.createElement('input');
    input.type = 'file';
    input.id = 'clip-input';
    document.body.append(input);
  });
  await chromium.page.setInputFiles('#clip-input', clip);
  const size = fs.statSync(clip).size;
  const id = await chromium.page.evaluate(async () => {
    // Slow the seeder down so playback and the seek happen long before the download ends: at
    // 128 KiB/s the ~4.3 MB clip takes over 30 s to arrive in full.
    window.swarm._capUpload(128 * 1024);
    return window.swarm.shareFile(document.getElementById('clip-input').files[0]);
  });
  await gecko.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id), id, { timeout: 10_000 });

  const url = await gecko.page.evaluate(async (id) => {
    // A timeline for the log: range requests of the media element (as the service worker
    // forwards them), what the download has, and the element's events.
    const t0 = performance.now();
    window.timeline = [];
    const mark = (what) => window.timeline.push(`${Math.round(performance.now() - t0)} ms ${what}`);
    navigator.serviceWorker.addEventListener('message', (event) => {
      if (event.data && event.data.type === 'swarm-range') mark(`asked for bytes ${event.data.start}-${event.data.end < 0 ? '' : event.data.end}`);
    });
    const toWorker = Worker.prototype.postMessage;
    const ops = new Map();
    Worker.prototype.postMessage = function (request, ...rest) {
      if (!this.watched) {
        this.watched = true;
        this.addEventListener('message', (event) => {
          const op = ops.get(event.data && event.data.seq);
          if (op) mark(`storage: ${op} done${event.data.ok ? '' : ` (${event.data.error})`}`);
        });
      }
      if (request && request.op && request.op !== 'read') {
        ops.set(request.seq, `${request.op}${request.piece !== undefined ? ` piece ${request.piece}` : ''}`);
        mark(`storage: ${ops.get(request.seq)}`);
      }
      return toWorker.call(this, request, ...rest);
    };
    const post = MessagePort.prototype.postMessage;
    MessagePort.prototype.postMessage = function (reply, ...rest) {
      if (reply && 'ok' in reply) mark(reply.ok ? `answered ${reply.data.byteLength} bytes from ${reply.start}` : `answered ${reply.status}`);
      return post.call(this, reply, ...rest);
    };
    const url = await window.swarm.streamUrl(id);
    window.dl = window.swarm.download(id); // the download streamUrl started
    window.dlDone = false;
    window.dl.on('done', () => { window.dlDone = true; mark('download done'); });
    let received = -1;
    window.dl.on('progress', (p) => { if (p.received !== received) mark(`received ${received = p.received}`); });
    const video = document.createElement('video');
    video.id = 'player';
    video.muted = true;
    for (const type of ['loadedmetadata', 'canplay', 'playing', 'waiting', 'stalled', 'seeking', 'seeked', 'error']) {
      video.addEventListener(type, () => mark(`${type} at ${video.currentTime.toFixed(2)} s`));
    }
    video.src = url;
    document.body.append(video);
    window.playError = null;
    video.addEventListener('error', () => { window.playError = `${video.error.code}: ${video.error.message}`; });
    video.play().catch((err) => { window.playError = `play(): ${err.name}: ${err.message}`; });
    return url;
  }, id);
  expect(url).toMatch(new RegExp(`/stream/${id}$`));

  // On a failure (or with FIREFOX_TIMELINE=1), the timeline goes to the test's output.
  let passed = false;
  try {
    await playsWhileDownloading(gecko, size, clip);
    passed = true;
  } finally {
    if (!passed || process.env.FIREFOX_TIMELINE) {
      const timeline = await gecko.page.evaluate(() => window.timeline).catch((err) => [String(err)]);
      console.log(`Firefox streaming timeline:\n  ${timeline.join('\n  ')}`);
    }
  }
});

/** The checks of the streaming test, on the Firefox page `gecko` that plays the clip. */
async function playsWhileDownloading(gecko, size, clip) {
  await gecko.page.waitForFunction(
    () => window.playError || document.getElementById('player').currentTime > 1,
    null,
    { timeout: 60_000, polling: 100 },
  );
  expect(await gecko.page.evaluate(() => window.playError)).toBeNull();
  // Playing before the download is done. (Not `received > 0`: Firefox may start after the
  // first 256 KiB piece, which the stream gets as soon as it is stored, while `progress` is a
  // snapshot taken at most every 200 ms and when pieces arrive, so it can still say 0 then.)
  const atPlay = await gecko.page.evaluate(() => ({ ...window.dl.progress, done: window.dlDone }));
  expect(atPlay.done).toBe(false);
  expect(atPlay.total).toBe(size);
  expect(atPlay.received).toBeLessThan(size);

  const seek = await gecko.page.evaluate(async () => {
    const video = document.getElementById('player');
    const target = video.duration * 0.8;
    const started = performance.now();
    video.currentTime = target;
    await new Promise((resolve) => {
      const check = () => (window.playError || video.currentTime > target + 0.5 || performance.now() - started > 30_000
        ? resolve() : setTimeout(check, 50));
      check();
    });
    // Read in the same task as the check, so the download cannot finish in between.
    const received = window.dl.progress.received;
    return {
      ms: performance.now() - started, duration: video.duration, at: video.currentTime, target, received,
      done: window.dlDone, error: window.playError,
    };
  });
  expect(seek.error).toBeNull();
  expect(seek.duration).toBeGreaterThan(55);
  expect(seek.at).toBeGreaterThan(seek.target);
  // Within seconds (as in streaming.spec.js), and before the download ends.
  expect(seek.ms).toBeLessThan(20_000);
  expect(seek.done).toBe(false);
  expect(seek.received).toBeLessThan(size);
  // The whole file still arrives intact.
  const done = await gecko.page.evaluate(async () => {
    const blob = await window.dl.blob();
    return { size: blob.size, hash: await window.sha256(blob), received: window.dl.progress.received };
  });
  expect(done).toEqual({ size, hash: sha256(fs.readFileSync(clip)), received: size });
  console.log(`Firefox: playback started with ${atPlay.received} of ${size} bytes; seek to 80 % played after ${Math.round(seek.ms)} ms with ${seek.received} bytes`);
}

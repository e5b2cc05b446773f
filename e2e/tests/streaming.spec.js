// Media files that play while they download, through the streaming service worker.
import fs from 'node:fs';
import { test, expect, joinRoom, waitForPeers, testClip } from './harness.js';

let clip;
test.beforeAll(() => {
  clip = testClip();
});

test('a shared video plays while it downloads, and a seek to 80 % plays within seconds', async ({ browser, server }) => {
  test.setTimeout(120_000);
  const a = await joinRoom(browser, server, 'movie', 'movie-seeder');
  const b = await joinRoom(browser, server, 'movie', 'movie-viewer');
  await waitForPeers(a, [b.id]);
  await waitForPeers(b, [a.id]);
  const supported = await b.page.evaluate(() => document.createElement('video').canPlayType('video/webm; codecs="vp8, opus"'));
  expect(supported).not.toBe('');

  await a.page.evaluate(() => {
    const input = document.createElement('input');
    input.type = 'file';
    input.id = 'clip-input';
    document.body.append(input);
  });
  await a.page.setInputFiles('#clip-input', clip);
  const size = fs.statSync(clip).size;
  const id = await a.page.evaluate(async () => {
    // Slow the seeder down so playback and the seek demonstrably happen long before the
    // download ends: at 128 KiB/s the ~4.3 MB clip takes over 30 s to arrive in full.
    window.swarm._capUpload(128 * 1024);
    return window.swarm.shareFile(document.getElementById('clip-input').files[0]);
  });
  await b.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id), id);

  const url = await b.page.evaluate(async (id) => {
    const url = await window.swarm.streamUrl(id);
    window.dl = window.swarm.download(id); // the download streamUrl started
    const video = document.createElement('video');
    video.id = 'player';
    video.muted = true;
    video.src = url;
    document.body.append(video);
    window.playStarted = performance.now();
    video.play();
    return url;
  }, id);
  expect(url).toMatch(new RegExp(`/stream/${id}$`));

  await b.page.waitForFunction(() => document.getElementById('player').currentTime > 1, null, { timeout: 60_000, polling: 100 });
  const atPlay = await b.page.evaluate(() => window.dl.progress);
  expect(atPlay.total).toBe(size);
  expect(atPlay.received).toBeGreaterThan(0);
  expect(atPlay.received).toBeLessThan(size);

  const seek = await b.page.evaluate(async () => {
    const video = document.getElementById('player');
    const target = video.duration * 0.8;
    const started = performance.now();
    video.currentTime = target;
    await new Promise((resolve) => {
      const check = () => (video.currentTime > target + 0.5 ? resolve() : setTimeout(check, 50));
      check();
    });
    // Read in the same task as the check, so the download cannot finish in between.
    const received = window.dl.progress.received;
    return { ms: performance.now() - started, duration: video.duration, at: video.currentTime, received };
  });
  expect(seek.duration).toBeGreaterThan(55);
  // Within seconds, and long before the download ends (over 30 s at the cap). The time
  // depends on how much of the pieces already in flight at the moment of the seek must still
  // arrive at 128 KiB/s: 0.7 to 8 s in most runs, 14 s seen once on a loaded machine; how fast
  // a seek plays is measured by `scripts/bench.sh media`, not here.
  expect(seek.ms).toBeLessThan(20_000);
  expect(seek.received).toBeLessThan(size);
  // The whole file still arrives intact, and the download then reports all of it.
  const done = await b.page.evaluate(async () => (await window.dl.blob()).size);
  expect(done).toBe(size);
  expect(await b.page.evaluate(() => window.dl.progress.received)).toBe(size);
  console.log(`playback started with ${atPlay.received} of ${size} bytes; seek to 80 % played after ${Math.round(seek.ms)} ms with ${seek.received} bytes`);
});

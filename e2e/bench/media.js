// Benchmark: live media and media-file streaming latencies, with the browser's own numbers
// for the same file from a local Blob URL in the same run.
//   1. publish() -> first decoded remote video frame (median of several publishes)
//   2. play -> first frame of a ~50 MiB video: through the swarm (streamUrl) vs a Blob URL
//   3. seek to 80 % -> next frame: through the swarm while that part is not downloaded yet
//      (the seeder's upload is capped so it cannot be) vs a Blob URL
// Usage: node bench/media.js [rounds=5]
import fs from 'node:fs';
import { MiB, openBench } from './common.js';
import { makeClip } from '../tests/harness.js';

const rounds = Number(process.argv[2] || 5);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** ~50 MiB of VP8 + Opus WebM, made once with ffmpeg. */
const bigClip = () => makeClip('bench-50mib.webm', { size: '1280x720', pattern: 'testsrc2', seconds: 120, bitrate: '3300k' });

const bench = await openBench();

// 1. publish -> first decoded frame.
const sender = await bench.page();
const receiver = await bench.page();
const room = `media-${Date.now()}`;
await bench.join(sender, room);
await bench.join(receiver, room);
await receiver.waitForFunction(() => window.swarm.peers().length === 1, null, { timeout: 30_000 });
await receiver.evaluate(() => {
  window.firstFrames = [];
  window.swarm.on('stream', (peer, stream) => {
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.srcObject = stream;
    document.body.append(video);
    video.requestVideoFrameCallback(() => { window.firstFrames.push(Date.now()); video.remove(); });
  });
});
const publishMs = [];
for (let i = 0; i < rounds; i++) {
  const started = await sender.evaluate(async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    window.current = stream;
    const t = Date.now();
    await window.swarm.publish(stream);
    return t;
  });
  await receiver.waitForFunction((n) => window.firstFrames.length === n, i + 1, { timeout: 30_000 });
  publishMs.push((await receiver.evaluate(() => window.firstFrames.at(-1))) - started);
  await sender.evaluate(() => { window.swarm.unpublish(window.current); window.current.getTracks().forEach((t) => t.stop()); });
  await new Promise((r) => setTimeout(r, 500));
}
console.log(`publish -> first decoded remote frame: median ${median(publishMs)} ms (${publishMs.join(', ')})`);

// 2 and 3: a ~50 MiB video.
const clip = bigClip();
const size = fs.statSync(clip).size;
await sender.evaluate(() => {
  const input = document.createElement('input');
  input.type = 'file';
  input.id = 'clip';
  document.body.append(input);
});
await sender.setInputFiles('#clip', clip);

/** In `page`, plays `src` and returns ms to the first frame, then ms from a seek to 80 % to the next frame. */
const PLAY = async (src) => {
  const video = document.createElement('video');
  video.muted = true;
  document.body.append(video);
  const frame = () => new Promise((resolve) => video.requestVideoFrameCallback(() => resolve(performance.now())));
  const t0 = performance.now();
  video.src = src;
  video.play();
  const first = (await frame()) - t0;
  await new Promise((r) => setTimeout(r, 1000));
  const t1 = performance.now();
  video.currentTime = video.duration * 0.8;
  await new Promise((resolve) => video.addEventListener('seeked', resolve, { once: true }));
  const seek = (await frame()) - t1;
  video.pause();
  video.remove();
  return { first, seek };
};

const local = [];
for (let i = 0; i < 3; i++) {
  local.push(await sender.evaluate(async (play) => {
    const url = URL.createObjectURL(document.getElementById('clip').files[0]);
    // eslint-disable-next-line no-new-func
    const result = await new Function(`return (${play})`)()(url);
    URL.revokeObjectURL(url);
    return result;
  }, PLAY.toString()));
}

const swarmRuns = [];
for (let i = 0; i < 3; i++) {
  // A fresh viewer each time, so nothing is cached; the seeder is capped at 8 MiB/s so the
  // end of the file is not downloaded when the seek happens.
  const viewer = await bench.page();
  await bench.join(viewer, room);
  await viewer.waitForFunction(() => window.swarm.peers().length >= 1, null, { timeout: 30_000 });
  const id = await sender.evaluate(async () => {
    window.swarm._capUpload(8 * 1024 * 1024);
    return window.clipId || (window.clipId = await window.swarm.shareFile(document.getElementById('clip').files[0]));
  });
  await viewer.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), id, { timeout: 30_000 });
  const url = await viewer.evaluate((id) => window.swarm.streamUrl(id), id);
  const result = await viewer.evaluate(async ([play, url, id]) => {
    // eslint-disable-next-line no-new-func
    const r = await new Function(`return (${play})`)()(url);
    return { ...r, receivedAtSeekEnd: window.swarm.download(id).progress.received };
  }, [PLAY.toString(), url, id]);
  swarmRuns.push(result);
  await viewer.context().close();
}
const fmt = (xs) => `${Math.round(median(xs))} ms (${xs.map((x) => Math.round(x)).join(', ')})`;
console.log(`\nvideo: ${(size / MiB).toFixed(1)} MiB, VP8+Opus WebM, 120 s`);
console.log(`| measure | swarm (streamUrl) | local Blob URL |`);
console.log(`|---|---|---|`);
console.log(`| publish -> first decoded remote frame | ${fmt(publishMs)} | – |`);
console.log(`| play -> first frame | ${fmt(swarmRuns.map((r) => r.first))} | ${fmt(local.map((r) => r.first))} |`);
console.log(`| seek to 80 % -> next frame | ${fmt(swarmRuns.map((r) => r.seek))} | ${fmt(local.map((r) => r.seek))} |`);
console.log(`\nbytes downloaded when the seek had played: ${swarmRuns.map((r) => `${(r.receivedAtSeekEnd / MiB).toFixed(1)} MiB`).join(', ')} of ${(size / MiB).toFixed(1)} MiB`);
await bench.close();

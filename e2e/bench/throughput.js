// Benchmark: one file between two pages through the Swarm API, against raw JavaScript
// RTCDataChannel senders/receivers between two pages of the same Chromium, in the same run:
// the channel alone with two send buffers, and a raw file transfer (see `RAW`). Swarm's ratio
// is given to the faster raw channel and to the raw file transfer. Reports CPU per MiB by
// Chromium process type for each, the share of the machine's CPU left idle, and the
// transport's stalls: gaps of 300 ms or more in what the receiver gets, after which a
// retransmission timer restarted an ordered channel. They come at random (often several in a
// row in a transfer's first seconds, far more often with a large send buffer), and move a
// single round's ratio more than anything either side does, so the ratios are also given over
// the time not stalled. After the timed rounds, samples the receiver's JS heap and the
// browser's memory in one more transfer of each kind.
//
// Three layouts (the third argument): `shared` (the default), both pages in one Chromium
// sharing the machine's two cores; `pinned`, the sender in one Chromium bound to core 0 and
// the receiver in another bound to core 1, as if each peer had a machine (a core) of its own.
// Both run an ordinary profile on disk, as users do. `incognito` is `shared` with every page
// in an incognito context of its own (how results before 2026-11-22 were measured): there the
// private file system lives in the browser process's memory, and every storage write is a
// round trip to it.
//
// Run through scripts/bench.sh (it builds, and runs this inside a network namespace).
// Usage: node bench/throughput.js [MiB=512] [rounds=2] [shared|pinned|incognito]
import { execFileSync } from 'node:child_process';
import { MiB, chromiumCpu, deterministicBlob, chromiumThreads, cpuPerMiB, formatCpu, idleShare, machineCpu, openBench, threadsPerMiB } from './common.js';

/** Resident memory of every Chromium process together, in bytes. */
function chromiumRss() {
  try {
    const out = execFileSync('ps', ['-C', 'chromium', '-o', 'rss='], { encoding: 'utf8' });
    return out.split('\n').reduce((sum, line) => sum + (Number(line.trim()) || 0), 0) * 1024;
  } catch {
    return 0;
  }
}

/**
 * Samples the receiver's JS heap and the RSS of all Chromium processes every 200 ms until
 * `stop()`, which returns the peaks; without a `receiver`, samples nothing. Sampling takes
 * about a fifth of the raw channel's speed on two cores, so the timed rounds do not sample:
 * a separate transfer of each kind does.
 */
async function sampleMemory(receiver) {
  if (!receiver) return () => ({});
  const cdp = await receiver.context().newCDPSession(receiver);
  await cdp.send('Performance.enable');
  let peakHeap = 0;
  const rssBefore = chromiumRss();
  let peakRss = rssBefore;
  const timer = setInterval(async () => {
    peakRss = Math.max(peakRss, chromiumRss());
    try {
      const { metrics } = await cdp.send('Performance.getMetrics');
      const heap = metrics.find((m) => m.name === 'JSHeapUsedSize')?.value || 0;
      peakHeap = Math.max(peakHeap, heap);
    } catch { /* page busy */ }
  }, 200);
  return () => {
    clearInterval(timer);
    return { peakHeap, rssBefore, peakRss };
  };
}

const size = Number(process.argv[2] || 512) * MiB;
const rounds = Number(process.argv[3] || 2);
const layout = process.argv[4] || 'shared';
if (!['shared', 'pinned', 'incognito'].includes(layout)) throw new Error(`unknown layout ${layout} (shared, pinned, incognito)`);

/**
 * Installed in a receiving page before it connects: every data channel it opens or accepts
 * notes the gaps of at least STALL_MS between two messages received while `window.stalls` is
 * set (`watchStalls(true)` sets it, and `watchStalls(false)` returns what it noted). Such
 * gaps are the transport's: a lost packet that only a retransmission timer (about 400 ms
 * here) recovers stops an ordered channel, with data waiting on both sides.
 */
function installStallWatch() {
  const STALL_MS = 300;
  const watch = (channel) => channel.addEventListener('message', () => {
    const w = window.stalls;
    if (!w) return;
    const now = performance.now();
    if (w.last && now - w.last >= STALL_MS) w.gaps.push(now - w.last);
    w.last = now;
  });
  const create = RTCPeerConnection.prototype.createDataChannel;
  RTCPeerConnection.prototype.createDataChannel = function (...args) {
    const channel = create.apply(this, args);
    watch(channel);
    return channel;
  };
  const property = Object.getOwnPropertyDescriptor(RTCPeerConnection.prototype, 'ondatachannel');
  Object.defineProperty(RTCPeerConnection.prototype, 'ondatachannel', {
    get() { return property.get.call(this); },
    set(handler) { property.set.call(this, handler && ((event) => { watch(event.channel); return handler(event); })); },
  });
}

/** Starts noting stalls in `receiver`; the returned function stops and gives `{count, ms}`. */
async function watchStalls(receiver) {
  await receiver.evaluate(() => { window.stalls = { last: 0, gaps: [] }; });
  return async () => receiver.evaluate(() => {
    const { gaps } = window.stalls;
    window.stalls = null;
    return { count: gaps.length, ms: gaps.reduce((a, b) => a + b, 0) };
  });
}

const bench = await openBench({ pinned: layout === 'pinned', onDisk: layout !== 'incognito' });
let opened = 0;
/** Pages alternate sender, receiver (browser 0, browser 1 when pinned). */
const page = () => bench.page(opened++ % 2);

/**
 * The raw transfers, each 64 KiB messages on one ordered channel with back-pressure: up to
 * `high` bytes in the send buffer, refilled when it drains to `low`.
 * - `usual`: the channel alone, the same 64 KiB sent again and again and nothing kept, with
 *   the common 1 MiB buffer (what Swarm kept before this was measured).
 * - `small`: the same with the buffer Swarm keeps.
 * - `file`: a file transfer as the WebRTC samples write one: the sender reads the same Blob
 *   Swarm shares (4 MiB at a time, the next read under way while one is sent) and the
 *   receiver keeps the messages and makes a Blob of them, timed until it is made. It neither
 *   verifies nor bounds its memory, and it cannot resume or use a second source.
 */
const RAW = {
  usual: { high: 1024 * 1024, low: 256 * 1024, file: false },
  small: { high: 128 * 1024, low: 32 * 1024, file: false },
  file: { high: 128 * 1024, low: 32 * 1024, file: true },
};

/** A raw RTCDataChannel transfer (`kind`, one of `RAW`), SDP relayed by this script. */
async function raw(sender, receiver, kind, sample = false) {
  await receiver.evaluate(installStallWatch);
  await receiver.evaluate(() => {
    window.pc = new RTCPeerConnection();
    window.pc.onicecandidate = (e) => { window.candidates = (window.candidates || []).concat(e.candidate ? [e.candidate.toJSON()] : []); };
    window.received = new Promise((resolve) => {
      window.pc.ondatachannel = ({ channel }) => {
        channel.binaryType = 'arraybuffer';
        let bytes = 0;
        let started = 0;
        const kept = [];
        channel.onmessage = (e) => {
          if (!started) started = performance.now();
          bytes += e.data.byteLength;
          if (window.keep) kept.push(e.data);
          if (bytes < window.expected) return;
          const size = window.keep ? new Blob(kept).size : bytes;
          resolve({ bytes: size, ms: performance.now() - started });
        };
      };
    });
  });
  const offer = await sender.evaluate(async () => {
    window.pc = new RTCPeerConnection();
    window.channel = window.pc.createDataChannel('raw', { ordered: true });
    window.pc.onicecandidate = (e) => { window.candidates = (window.candidates || []).concat(e.candidate ? [e.candidate.toJSON()] : []); };
    await window.pc.setLocalDescription();
    return window.pc.localDescription.toJSON();
  });
  const answer = await receiver.evaluate(async (offer) => {
    await window.pc.setRemoteDescription(offer);
    await window.pc.setLocalDescription();
    return window.pc.localDescription.toJSON();
  }, offer);
  await sender.evaluate((answer) => window.pc.setRemoteDescription(answer), answer);
  // Every candidate gathered on both sides (a fixed wait missed some once, and the transfer
  // then never started).
  const gathered = () => new Promise((resolve) => {
    const check = () => window.pc.iceGatheringState === 'complete' && resolve();
    window.pc.addEventListener('icegatheringstatechange', check);
    check();
    setTimeout(resolve, 5000);
  });
  await Promise.all([sender.evaluate(gathered), receiver.evaluate(gathered)]);
  const [senderCandidates, receiverCandidates] = await Promise.all([
    sender.evaluate(() => window.candidates || []), receiver.evaluate(() => window.candidates || [])]);
  await receiver.evaluate(async (cs) => { for (const c of cs) await window.pc.addIceCandidate(c); }, senderCandidates);
  await sender.evaluate(async (cs) => { for (const c of cs) await window.pc.addIceCandidate(c); }, receiverCandidates);
  await receiver.evaluate(([size, keep]) => { window.expected = size; window.keep = keep; }, [size, kind.file]);
  if (kind.file) await sender.evaluate(`window.file = (${deterministicBlob})(${size})`);
  await sender.evaluate(async () => {
    const channel = window.channel;
    if (channel.readyState !== 'open') await new Promise((r) => { channel.onopen = r; });
  });
  const stopSampling = await sampleMemory(sample && receiver);
  const stopStalls = await watchStalls(receiver);
  const cpuBefore = chromiumCpu();
  const threadsBefore = chromiumThreads();
  const machineBefore = machineCpu();
  await sender.evaluate(async ([size, { high, low, file }]) => {
    const channel = window.channel;
    channel.bufferedAmountLowThreshold = low;
    const drained = () => new Promise((r) => { channel.onbufferedamountlow = r; });
    const MESSAGE = 64 * 1024;
    if (!file) {
      const message = new Uint8Array(MESSAGE);
      let sent = 0;
      while (sent < size) {
        while (channel.bufferedAmount < high && sent < size) {
          channel.send(message);
          sent += message.length;
        }
        await drained();
      }
      return;
    }
    const BLOCK = 4 * 1024 * 1024;
    const read = (at) => window.file.slice(at, at + BLOCK).arrayBuffer();
    let next = read(0);
    for (let at = 0; at < size; at += BLOCK) {
      const block = await next;
      if (at + BLOCK < size) next = read(at + BLOCK);
      for (let offset = 0; offset < block.byteLength; offset += MESSAGE) {
        if (channel.bufferedAmount >= high) await drained();
        channel.send(new Uint8Array(block, offset, Math.min(MESSAGE, block.byteLength - offset)));
      }
    }
  }, [size, kind]);
  const { bytes, ms } = await receiver.evaluate(() => window.received);
  const cpu = cpuPerMiB(cpuBefore, size);
  const threads = threadsPerMiB(threadsBefore, size);
  const idle = idleShare(machineBefore);
  const stalls = await stopStalls();
  const memory = stopSampling();
  await bench.done(sender, receiver);
  return { mibps: bytes / MiB / (ms / 1000), steady: bytes / MiB / ((ms - stalls.ms) / 1000), cpu, threads, idle, stalls, ...memory };
}

/** The Swarm API: one page shares, the other downloads; timed from download() to blob(). */
async function swarm(sender, receiver, sample = false) {
  const room = `bench-${Math.random().toString(36).slice(2)}`;
  await receiver.evaluate(installStallWatch);
  await bench.join(sender, room);
  await bench.join(receiver, room);
  await receiver.waitForFunction(() => window.swarm.peers().length === 1, null, { timeout: 30_000 });
  const id = await bench.shareBytes(sender, size);
  await receiver.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), id, { timeout: 30_000 });
  const stopSampling = await sampleMemory(sample && receiver);
  const stopStalls = await watchStalls(receiver);
  const cpuBefore = chromiumCpu();
  const threadsBefore = chromiumThreads();
  const machineBefore = machineCpu();
  const result = await receiver.evaluate(async (id) => {
    const started = performance.now();
    const blob = await window.swarm.download(id).blob();
    return { bytes: blob.size, ms: performance.now() - started };
  }, id);
  const cpu = cpuPerMiB(cpuBefore, size);
  const threads = threadsPerMiB(threadsBefore, size);
  const idle = idleShare(machineBefore);
  const stalls = await stopStalls();
  const memory = stopSampling();
  await bench.done(sender, receiver);
  return {
    mibps: result.bytes / MiB / (result.ms / 1000),
    steady: result.bytes / MiB / ((result.ms - stalls.ms) / 1000),
    cpu,
    threads,
    idle,
    stalls,
    ...memory,
  };
}

const rows = [];
let lastThreads = null;
const cpuTotal = (byType) => Object.values(byType).reduce((a, b) => a + b, 0);
const KINDS = ['usual', 'small', 'file', 'swarm'];
const LABELS = { usual: 'raw channel, 1 MiB buffer', small: 'raw channel, 128 KiB buffer', file: 'raw file transfer', swarm: 'Swarm' };
for (let round = 1; round <= rounds; round++) {
  const t = {};
  for (const kind of KINDS) {
    t[kind] = kind === 'swarm' ? await swarm(await page(), await page()) : await raw(await page(), await page(), RAW[kind]);
  }
  // The raw channel alone: the faster of its two buffers this round.
  const channel = t.usual.mibps > t.small.mibps ? t.usual : t.small;
  lastThreads = { raw: t.file.threads, swarm: t.swarm.threads };
  const row = { round, channelRatio: t.swarm.mibps / channel.mibps, fileRatio: t.swarm.mibps / t.file.mibps };
  row.channelSteady = t.swarm.steady / Math.max(t.usual.steady, t.small.steady);
  row.fileSteady = t.swarm.steady / t.file.steady;
  for (const kind of KINDS) {
    row[kind] = t[kind].mibps;
    row[`${kind}Cpu`] = cpuTotal(t[kind].cpu);
  }
  rows.push(row);
  const each = (f) => KINDS.map((k) => `${LABELS[k]} ${f(t[k])}`).join('; ');
  console.log(`round ${round}: CPU ms per MiB (all Chromium processes, by type): ${each((x) => formatCpu(x.cpu))}`);
  console.log(`round ${round}: machine CPU idle during the transfer: ${each((x) => `${(100 * x.idle).toFixed(0)} %`)}`);
  console.log(`round ${round}: transport stalls (no message for 300 ms or more): ${each((x) => `${x.stalls.count} (${x.stalls.ms.toFixed(0)} ms)`)}`);
  console.log(`round ${round}: ${each((x) => `${x.mibps.toFixed(1)} MiB/s (${x.steady.toFixed(1)} without the stalls)`)}`);
  console.log(`round ${round}: Swarm / the faster raw channel ${row.channelRatio.toFixed(2)} (${row.channelSteady.toFixed(2)} without the stalls); Swarm / raw file transfer ${row.fileRatio.toFixed(2)} (${row.fileSteady.toFixed(2)})`);
}
if (process.env.BENCH_THREADS) {
  // CPU ms per MiB by thread (summed over threads of one name), last round: Swarm and the raw
  // file transfer.
  const last = lastThreads;
  const names = [...new Set([...Object.keys(last.raw), ...Object.keys(last.swarm)])]
    .filter((n) => (last.raw[n] || 0) + (last.swarm[n] || 0) >= 0.3)
    .sort((a, b) => (last.swarm[b] || 0) - (last.swarm[a] || 0));
  for (const n of names) console.log(`  ${n.padEnd(56)} raw file ${(last.raw[n] || 0).toFixed(1).padStart(5)}  swarm ${(last.swarm[n] || 0).toFixed(1).padStart(5)}`);
}
// Memory, in a transfer of each kind of its own (sampled, so not timed).
const rawMemory = await raw(await page(), await page(), RAW.small, true);
const memory = await swarm(await page(), await page(), true);
console.log(`memory: receiver peak JS heap ${(memory.peakHeap / MiB).toFixed(1)} MiB (raw ${(rawMemory.peakHeap / MiB).toFixed(1)} MiB), all Chromium processes ${(memory.rssBefore / MiB).toFixed(0)} MiB RSS before the download, ${(memory.peakRss / MiB).toFixed(0)} MiB peak during it`);
const mean = (k) => rows.reduce((a, r) => a + r[k], 0) / rows.length;
const speed = (k) => `${mean(k).toFixed(1)} MiB/s (${mean(`${k}Cpu`).toFixed(1)} ms)`;
console.log(`\n| file | raw channel, 1 MiB buffer | raw channel, 128 KiB buffer | raw file transfer | Swarm | Swarm / raw channel | Swarm / raw file transfer | receiver peak JS heap |`);
console.log(`|---|---|---|---|---|---|---|---|`);
console.log(`| ${size / MiB} MiB, ${layout} (mean of ${rows.length}; CPU per MiB in brackets) | ${speed('usual')} | ${speed('small')} | ${speed('file')} | ${speed('swarm')} | ${mean('channelRatio').toFixed(2)} (${mean('channelSteady').toFixed(2)} without stalls) | ${mean('fileRatio').toFixed(2)} (${mean('fileSteady').toFixed(2)}) | ${(memory.peakHeap / MiB).toFixed(1)} MiB |`);
await bench.close();

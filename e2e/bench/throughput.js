// Benchmark: one file between two pages through the Swarm API, against a raw JavaScript
// RTCDataChannel sender/receiver between two pages of the same Chromium, in the same run.
// Reports CPU per MiB by Chromium process type for each, the share of the machine's CPU left
// idle, and the transport's stalls: gaps of 300 ms or more in what the receiver gets, after
// which a retransmission timer restarted an ordered channel. Both kinds of transfer have them,
// at random (often several in a row in a transfer's first seconds), and they move a single
// round's ratio more than anything either side does, so the ratio is also given over the
// time not stalled. After the timed rounds, samples the receiver's JS heap and the browser's
// memory in one more transfer of each kind.
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
import { MiB, chromiumCpu, chromiumThreads, cpuPerMiB, formatCpu, idleShare, machineCpu, openBench, threadsPerMiB } from './common.js';

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

/** Raw RTCDataChannel: 64 KiB messages with back-pressure, SDP relayed by this script. */
async function raw(sender, receiver, sample = false) {
  await receiver.evaluate(installStallWatch);
  await receiver.evaluate(() => {
    window.pc = new RTCPeerConnection();
    window.pc.onicecandidate = (e) => { window.candidates = (window.candidates || []).concat(e.candidate ? [e.candidate.toJSON()] : []); };
    window.received = new Promise((resolve) => {
      window.pc.ondatachannel = ({ channel }) => {
        channel.binaryType = 'arraybuffer';
        let bytes = 0;
        let started = 0;
        channel.onmessage = (e) => {
          if (!started) started = performance.now();
          bytes += e.data.byteLength;
          if (bytes >= window.expected) resolve({ bytes, ms: performance.now() - started });
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
  await new Promise((r) => setTimeout(r, 500));
  const [senderCandidates, receiverCandidates] = await Promise.all([
    sender.evaluate(() => window.candidates || []), receiver.evaluate(() => window.candidates || [])]);
  await receiver.evaluate(async (cs) => { for (const c of cs) await window.pc.addIceCandidate(c); }, senderCandidates);
  await sender.evaluate(async (cs) => { for (const c of cs) await window.pc.addIceCandidate(c); }, receiverCandidates);
  await receiver.evaluate((size) => { window.expected = size; }, size);
  await sender.evaluate(async () => {
    const channel = window.channel;
    if (channel.readyState !== 'open') await new Promise((r) => { channel.onopen = r; });
  });
  const stopSampling = await sampleMemory(sample && receiver);
  const stopStalls = await watchStalls(receiver);
  const cpuBefore = chromiumCpu();
  const threadsBefore = chromiumThreads();
  const machineBefore = machineCpu();
  await sender.evaluate(async (size) => {
    const channel = window.channel;
    const message = new Uint8Array(64 * 1024);
    channel.bufferedAmountLowThreshold = 256 * 1024;
    let sent = 0;
    while (sent < size) {
      while (channel.bufferedAmount < 1024 * 1024 && sent < size) {
        channel.send(message);
        sent += message.length;
      }
      await new Promise((r) => { channel.onbufferedamountlow = r; });
    }
  }, size);
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
for (let round = 1; round <= rounds; round++) {
  const r = await raw(await page(), await page());
  const s = await swarm(await page(), await page());
  lastThreads = { raw: r.threads, swarm: s.threads };
  rows.push({ round, raw: r.mibps, swarm: s.mibps, ratio: s.mibps / r.mibps, steady: s.steady / r.steady, rawCpu: cpuTotal(r.cpu), swarmCpu: cpuTotal(s.cpu) });
  console.log(`round ${round}: CPU ms per MiB (all Chromium processes, by type): raw ${formatCpu(r.cpu)}; swarm ${formatCpu(s.cpu)}`);
  console.log(`round ${round}: machine CPU idle during the transfer: raw ${(100 * r.idle).toFixed(0)} %, swarm ${(100 * s.idle).toFixed(0)} %`);
  console.log(`round ${round}: transport stalls (no message for 300 ms or more): raw ${r.stalls.count} (${r.stalls.ms.toFixed(0)} ms), swarm ${s.stalls.count} (${s.stalls.ms.toFixed(0)} ms)`);
  console.log(`round ${round}: raw ${r.mibps.toFixed(1)} MiB/s, swarm ${s.mibps.toFixed(1)} MiB/s, ratio ${(s.mibps / r.mibps).toFixed(2)}; without the stalls: raw ${r.steady.toFixed(1)}, swarm ${s.steady.toFixed(1)}, ratio ${(s.steady / r.steady).toFixed(2)}`);
}
if (process.env.BENCH_THREADS) {
  // CPU ms per MiB by thread (summed over threads of one name), both kinds, last round.
  const last = lastThreads;
  const names = [...new Set([...Object.keys(last.raw), ...Object.keys(last.swarm)])]
    .filter((n) => (last.raw[n] || 0) + (last.swarm[n] || 0) >= 0.3)
    .sort((a, b) => (last.swarm[b] || 0) - (last.swarm[a] || 0));
  for (const n of names) console.log(`  ${n.padEnd(56)} raw ${(last.raw[n] || 0).toFixed(1).padStart(5)}  swarm ${(last.swarm[n] || 0).toFixed(1).padStart(5)}`);
}
// Memory, in a transfer of each kind of its own (sampled, so not timed).
const rawMemory = await raw(await page(), await page(), true);
const memory = await swarm(await page(), await page(), true);
console.log(`memory: receiver peak JS heap ${(memory.peakHeap / MiB).toFixed(1)} MiB (raw ${(rawMemory.peakHeap / MiB).toFixed(1)} MiB), all Chromium processes ${(memory.rssBefore / MiB).toFixed(0)} MiB RSS before the download, ${(memory.peakRss / MiB).toFixed(0)} MiB peak during it`);
const mean = (k) => rows.reduce((a, r) => a + r[k], 0) / rows.length;
console.log(`\n| file | raw RTCDataChannel | Swarm | ratio | ratio without transport stalls | CPU per MiB: raw / Swarm | receiver peak JS heap |`);
console.log(`|---|---|---|---|---|---|---|`);
console.log(`| ${size / MiB} MiB, ${layout} (mean of ${rows.length}) | ${mean('raw').toFixed(1)} MiB/s | ${mean('swarm').toFixed(1)} MiB/s | ${mean('ratio').toFixed(2)} | ${mean('steady').toFixed(2)} | ${mean('rawCpu').toFixed(1)} / ${mean('swarmCpu').toFixed(1)} ms (${(mean('swarmCpu') / mean('rawCpu')).toFixed(2)}) | ${(memory.peakHeap / MiB).toFixed(1)} MiB |`);
await bench.close();

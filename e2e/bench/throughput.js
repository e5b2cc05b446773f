// Benchmark: one file between two pages through the Swarm API, against a raw JavaScript
// RTCDataChannel sender/receiver between two pages of the same Chromium, in the same run.
// Reports CPU per MiB by Chromium process type for each; after the timed rounds, samples the
// receiver's JS heap and the browser's memory in one more transfer of each kind.
//
// Two layouts (the third argument): `shared` (the default), both pages in one Chromium
// sharing the machine's two cores; `pinned`, the sender in one Chromium bound to core 0 and
// the receiver in another bound to core 1, as if each peer had a machine (a core) of its own.
//
// Run through scripts/bench.sh (it builds, and runs this inside a network namespace).
// Usage: node bench/throughput.js [MiB=512] [rounds=2] [shared|pinned]
import { execFileSync } from 'node:child_process';
import { MiB, chromiumCpu, cpuPerMiB, formatCpu, openBench } from './common.js';

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
if (!['shared', 'pinned'].includes(layout)) throw new Error(`unknown layout ${layout} (shared, pinned)`);

const bench = await openBench({ pinned: layout === 'pinned' });
let opened = 0;
/** Pages alternate sender, receiver (browser 0, browser 1 when pinned). */
const page = () => bench.page(opened++ % 2);

/** Raw RTCDataChannel: 64 KiB messages with back-pressure, SDP relayed by this script. */
async function raw(sender, receiver, sample = false) {
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
  const cpuBefore = chromiumCpu();
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
  const memory = stopSampling();
  await Promise.all([sender.context().close(), receiver.context().close()]);
  return { mibps: bytes / MiB / (ms / 1000), cpu, ...memory };
}

/** The Swarm API: one page shares, the other downloads; timed from download() to blob(). */
async function swarm(sender, receiver, sample = false) {
  const room = `bench-${Math.random().toString(36).slice(2)}`;
  await bench.join(sender, room);
  await bench.join(receiver, room);
  await receiver.waitForFunction(() => window.swarm.peers().length === 1, null, { timeout: 30_000 });
  const id = await bench.shareBytes(sender, size);
  await receiver.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), id, { timeout: 30_000 });
  const stopSampling = await sampleMemory(sample && receiver);
  const cpuBefore = chromiumCpu();
  const result = await receiver.evaluate(async (id) => {
    const started = performance.now();
    const blob = await window.swarm.download(id).blob();
    return { bytes: blob.size, ms: performance.now() - started };
  }, id);
  const cpu = cpuPerMiB(cpuBefore, size);
  const memory = stopSampling();
  await Promise.all([sender.context().close(), receiver.context().close()]);
  return { mibps: result.bytes / MiB / (result.ms / 1000), cpu, ...memory };
}

const rows = [];
const cpuTotal = (byType) => Object.values(byType).reduce((a, b) => a + b, 0);
for (let round = 1; round <= rounds; round++) {
  const r = await raw(await page(), await page());
  const s = await swarm(await page(), await page());
  rows.push({ round, raw: r.mibps, swarm: s.mibps, ratio: s.mibps / r.mibps, rawCpu: cpuTotal(r.cpu), swarmCpu: cpuTotal(s.cpu) });
  console.log(`round ${round}: CPU ms per MiB (all Chromium processes, by type): raw ${formatCpu(r.cpu)}; swarm ${formatCpu(s.cpu)}`);
  console.log(`round ${round}: raw ${r.mibps.toFixed(1)} MiB/s, swarm ${s.mibps.toFixed(1)} MiB/s, ratio ${(s.mibps / r.mibps).toFixed(2)}`);
}
// Memory, in a transfer of each kind of its own (sampled, so not timed).
const rawMemory = await raw(await page(), await page(), true);
const memory = await swarm(await page(), await page(), true);
console.log(`memory: receiver peak JS heap ${(memory.peakHeap / MiB).toFixed(1)} MiB (raw ${(rawMemory.peakHeap / MiB).toFixed(1)} MiB), all Chromium processes ${(memory.rssBefore / MiB).toFixed(0)} MiB RSS before the download, ${(memory.peakRss / MiB).toFixed(0)} MiB peak during it`);
const mean = (k) => rows.reduce((a, r) => a + r[k], 0) / rows.length;
console.log(`\n| file | raw RTCDataChannel | Swarm | ratio | CPU per MiB: raw / Swarm | receiver peak JS heap |`);
console.log(`|---|---|---|---|---|---|`);
console.log(`| ${size / MiB} MiB, ${layout} (mean of ${rows.length}) | ${mean('raw').toFixed(1)} MiB/s | ${mean('swarm').toFixed(1)} MiB/s | ${mean('ratio').toFixed(2)} | ${mean('rawCpu').toFixed(1)} / ${mean('swarmCpu').toFixed(1)} ms (${(mean('swarmCpu') / mean('rawCpu')).toFixed(2)}) | ${(memory.peakHeap / MiB).toFixed(1)} MiB |`);
await bench.close();

// Where the pages' main threads spend their time during one Swarm transfer: a sampling CPU
// profile (Chrome DevTools Protocol) of the sender and the receiver, printed as the 30
// functions with the most self time, in ms per MiB moved. WebAssembly functions appear under
// their Rust names. Also counts the data-channel messages each page sends, by peer-protocol
// tag. Not part of `bench.sh all`: a tool for finding what to speed up.
//
// Run through scripts/bench.sh profile [MiB=128].
import { MiB, openBench } from './common.js';

const size = Number(process.argv[2] || 128) * MiB;
const bench = await openBench();
const sender = await bench.page();
const receiver = await bench.page();
const room = 'profile';
// Count every data-channel message each page sends, by its first byte (the frame's tag).
for (const p of [sender, receiver]) {
  await p.evaluate(() => {
    window.sentByTag = {};
    const send = RTCDataChannel.prototype.send;
    RTCDataChannel.prototype.send = function (data) {
      const tag = typeof data === 'string' ? 'text' : `0x${new Uint8Array(data.buffer || data, data.byteOffset || 0, 1)[0].toString(16).padStart(2, '0')}`;
      const entry = (window.sentByTag[tag] ||= { messages: 0, bytes: 0 });
      entry.messages += 1;
      entry.bytes += data.byteLength ?? data.length;
      return send.call(this, data);
    };
  });
}
await bench.join(sender, room);
await bench.join(receiver, room);
await receiver.waitForFunction(() => window.swarm.peers().length === 1, null, { timeout: 30_000 });
const id = await bench.shareBytes(sender, size);
await receiver.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), id, { timeout: 30_000 });
const cdps = [];
for (const p of [sender, receiver]) {
  const cdp = await p.context().newCDPSession(p);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
  await cdp.send('Profiler.start');
  cdps.push(cdp);
}
const result = await receiver.evaluate(async (id) => {
  const started = performance.now();
  const blob = await window.swarm.download(id).blob();
  return { bytes: blob.size, ms: performance.now() - started };
}, id);
console.log(`${(result.bytes / MiB / (result.ms / 1000)).toFixed(1)} MiB/s`);
for (const [name, p] of [['sender', sender], ['receiver', receiver]]) {
  const counts = await p.evaluate(() => window.sentByTag);
  const line = Object.entries(counts).sort().map(([tag, c]) => `${tag}: ${(c.messages / (size / MiB)).toFixed(2)} messages per MiB`).join(', ');
  console.log(`${name} sent: ${line}`);
}
for (const [name, cdp] of [['sender', cdps[0]], ['receiver', cdps[1]]]) {
  const { profile } = await cdp.send('Profiler.stop');
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = profile.timeDeltas;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]);
    const f = node.callFrame;
    const key = `${f.functionName || '(anon)'} ${f.url.split('/').pop()}:${f.lineNumber}`;
    self.set(key, (self.get(key) || 0) + (dt[i] || 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const idle = (self.get('(idle) :-1') || 0);
  console.log(`\n== ${name}: total ${(total / 1000).toFixed(0)} ms, busy ${((total - idle) / 1000).toFixed(0)} ms, per MiB busy ${((total - idle) / 1000 / (size / MiB)).toFixed(2)} ms`);
  const top = [...self.entries()].filter(([k]) => k !== '(idle) :-1').sort((a, b) => b[1] - a[1]).slice(0, 30);
  for (const [k, us] of top) console.log(`${(us / 1000).toFixed(0).padStart(7)} ms  ${(us / 1000 / (size / MiB)).toFixed(3)} ms/MiB  ${k}`);
}
await bench.close();

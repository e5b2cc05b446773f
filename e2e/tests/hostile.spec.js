// A hostile peer against a browser: a page that joins through the public signalling protocol
// (v1, no key), opens a raw RTCPeerConnection with a `swarm` data channel to the victim, and
// speaks the peer protocol with hand-made frames. The victim must not panic (the harness fails
// the test on any page error), must drop the attacker with the named bound, and must go on
// working with honest peers. Each attack is also measured on the victim: its JS heap (after a
// forced garbage collection, through a CDP session) and its WebAssembly memory (the module's
// exported `memory`: the wasm-bindgen `init()` the page already ran returns the same instance),
// which holds everything the Rust node keeps and queues. WebAssembly memory only grows, so its
// growth is the high-water mark of what an attack made the victim hold.
import { test, expect, joinRoom, waitForPeers, share, startDownload, finish } from './harness.js';

const MiB = 1024 * 1024;

/** The victim's memory now: JS heap bytes after a garbage collection, and wasm memory. */
async function memory(member) {
  member.cdp ??= await member.page.context().newCDPSession(member.page);
  await member.cdp.send('HeapProfiler.collectGarbage');
  const heap = await member.cdp.send('Runtime.getHeapUsage');
  const wasm = await member.page.evaluate(async () => {
    const { default: init } = await import('/pkg/client_wasm.js');
    return (await init()).memory.buffer.byteLength;
  });
  return { js: heap.usedSize, wasm };
}

/**
 * Checks and reports the growth of `member`'s memory since `before` against `bounds`
 * ({js, wasm} in bytes), for the attack `what`.
 */
async function expectGrowth(member, before, bounds, what) {
  const after = await memory(member);
  const growth = { js: after.js - before.js, wasm: after.wasm - before.wasm };
  const mib = (n) => `${(n / MiB).toFixed(2)} MiB`;
  console.log(`[memory] ${what}: JS heap ${mib(before.js)} -> ${mib(after.js)} (${mib(growth.js)}, bound ${mib(bounds.js)}); `
    + `wasm memory ${mib(before.wasm)} -> ${mib(after.wasm)} (${mib(growth.wasm)}, bound ${mib(bounds.wasm)})`);
  expect(growth.js, `${what}: JS heap growth`).toBeLessThanOrEqual(bounds.js);
  expect(growth.wasm, `${what}: wasm memory growth`).toBeLessThanOrEqual(bounds.wasm);
  return after;
}

/** Waits until `member` logged that it dropped a peer for `reason` (a bound of share::bounds). */
async function droppedFor(member, reason) {
  await expect.poll(
    () => member.logs.some((line) => /dropping a peer that broke a bound/.test(line) && line.includes(reason)),
    { message: `the victim logs a drop for "${reason}"`, timeout: 15_000 },
  ).toBe(true);
}

test.describe.configure({ timeout: 120_000 });

/**
 * Opens the attacker's page and connects it to `victimId` in `room`. The page keeps
 * `window.attack` with `send(bytes)`, `frames` (tags of what the victim sent) and `closed`.
 * When the victim asks for the manifest of `baitId`, it gets a part whose offset is near
 * u32::MAX (on wasm32, `offset + len` wrapped past the bound check, and the slice panicked).
 */
async function attacker(browser, server, room, victimId) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.url}/`);
  const id = await page.evaluate(async ({ ws, victimId }) => {
    const MiB = 1024 * 1024;
    const hex = (s) => Uint8Array.from(s.match(/../g), (b) => parseInt(b, 16));
    const attack = { frames: [], closed: false, open: false, manifestBytes: 0 };
    window.attack = attack;
    const socket = new WebSocket(ws);
    const welcome = await new Promise((resolve, reject) => {
      socket.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        if (msg.type === 'welcome') resolve(msg);
      };
      socket.onerror = () => reject(new Error('no welcome'));
    });
    const signal = (data) => socket.send(JSON.stringify({ type: 'signal', to: victimId, data }));
    const pc = new RTCPeerConnection({ iceServers: welcome.iceServers || [] });
    const dc = pc.createDataChannel('swarm', { ordered: true });
    dc.binaryType = 'arraybuffer';
    attack.send = (bytes) => dc.send(bytes);
    dc.onclose = () => { attack.closed = true; };
    dc.onmessage = (e) => {
      if (typeof e.data === 'string') return;
      const bytes = new Uint8Array(e.data);
      attack.frames.push(bytes[0]);
      if (bytes[0] === 0x0a) attack.manifestBytes += bytes.length;
      // A manifest request (0x09) for the bait: a part at an offset that overflows.
      if (bytes[0] === 0x09 && attack.bait && bytes.slice(1, 33).every((b, i) => b === attack.bait[i])) {
        const part = new Uint8Array(1 + 32 + 8 + 32);
        const view = new DataView(part.buffer);
        part[0] = 0x0a;
        part.set(attack.bait, 1);
        view.setUint32(33, 0xfffffff0);
        view.setUint32(37, 1000);
        part.fill(0xee, 41);
        dc.send(part);
        attack.sentOverflow = true;
      }
    };
    socket.onmessage = async (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type !== 'signal' || msg.from !== victimId) return;
      if (msg.data.sdp) await pc.setRemoteDescription(msg.data.sdp);
      else if (msg.data.candidate) await pc.addIceCandidate(msg.data.candidate).catch(() => {});
    };
    pc.onicecandidate = (e) => signal({ candidate: e.candidate ? e.candidate.toJSON() : null });
    await pc.setLocalDescription(await pc.createOffer());
    signal({ sdp: { type: pc.localDescription.type, sdp: pc.localDescription.sdp } });
    await new Promise((resolve) => { dc.onopen = resolve; });
    attack.open = true;
    dc.send(Uint8Array.of(0x01, 2)); // hello, peer protocol 2
    // The bait: a content only the attacker offers.
    attack.bait = hex('ba'.repeat(32));
    attack.announce = (id, name) => {
      const label = new TextEncoder().encode(name);
      const frame = new Uint8Array(1 + 32 + 8 + 2 + label.length + 2);
      const view = new DataView(frame.buffer);
      frame[0] = 0x02;
      frame.set(id, 1);
      view.setBigUint64(33, BigInt(MiB));
      view.setUint16(41, label.length);
      frame.set(label, 43);
      view.setUint16(43 + label.length, 0);
      dc.send(frame);
    };
    attack.have = (id, piece) => {
      const frame = new Uint8Array(1 + 32 + 4);
      frame[0] = 0x04;
      frame.set(id, 1);
      new DataView(frame.buffer).setUint32(33, piece);
      dc.send(frame);
    };
    attack.requestManifest = (id) => {
      const frame = new Uint8Array(1 + 32);
      frame[0] = 0x09;
      frame.set(id, 1);
      dc.send(frame);
    };
    attack.hex = hex;
    attack.announce(attack.bait, 'bait.bin');
    return welcome.id;
  }, { ws: `${server.url.replace(/^http/, 'ws')}/ws/${room}`, victimId });
  return { page, context, id };
}

test('a hostile peer cannot crash a page, is dropped at a bound, and the page goes on working', async ({ browser, server }) => {
  const victim = await joinRoom(browser, server, 'hostile', 'victim');
  victim.logs = [];
  victim.page.on('console', (msg) => victim.logs.push(msg.text()));
  const seeder = await joinRoom(browser, server, 'hostile', 'seeder');
  await waitForPeers(victim, [seeder.id]);
  const evil = await attacker(browser, server, 'hostile', victim.id);
  await waitForPeers(victim, [seeder.id, evil.id].sort());

  // 1. The overflowing manifest part: the attacker is marked bad for the bait, no panic.
  const bait = 'ba'.repeat(32);
  await startDownload(victim, bait);
  await evil.page.waitForFunction(() => window.attack.sentOverflow === true, null, { timeout: 15_000 });
  await victim.page.waitForFunction(() => window.badPeers.length > 0, null, { timeout: 15_000 });
  expect(await victim.page.evaluate(() => window.badPeers)).toEqual([
    { peer: evil.id, reason: 'manifest part out of range' },
  ]);
  await victim.page.evaluate(() => window.dl.cancel());

  // 2. More fake contents than a peer may offer (1,025, at most 1,024): the victim closes the
  // connection. Bound: 1,024 small offers, well under 4 MiB of either memory.
  let before = await memory(victim);
  await evil.page.evaluate(() => {
    for (let n = 0; n <= 1024; n++) {
      const id = new Uint8Array(32).fill(0xfa);
      new DataView(id.buffer).setUint32(0, n);
      window.attack.announce(id, 'fake');
    }
  });
  await evil.page.waitForFunction(() => window.attack.closed, null, { timeout: 15_000 });
  await waitForPeers(victim, [seeder.id]);
  await droppedFor(victim, 'too many contents offered');
  const files = await victim.page.evaluate(() => window.swarm.files().map((f) => f.name));
  expect(files.filter((name) => name === 'fake')).toEqual([]);
  // Still out a while later (the attacker's page could reconnect; the victim does not answer).
  await victim.page.waitForTimeout(3000);
  expect(await victim.page.evaluate(() => window.swarm.peers())).toEqual([seeder.id]);
  await expectGrowth(victim, before, { js: 4 * MiB, wasm: 4 * MiB }, 'too many offers');

  // 3. Fake contents with a `have` of the last piece a manifest may have (2^20 - 1) each: kept
  // before any manifest says how many pieces there are, 128 KiB of piece bits per content (it
  // was 164 KB on the wire for 264 MB). Bound: 1 MiB of piece bits per peer (8 contents); the
  // ninth drops the attacker. Memory: at most 1 MiB of bits and bookkeeping, 4 MiB of either.
  const flooder = await attacker(browser, server, 'hostile', victim.id);
  await waitForPeers(victim, [seeder.id, flooder.id].sort());
  before = await memory(victim);
  const sent = await flooder.page.evaluate(() => {
    let frames = 0;
    for (let n = 0; n <= 1024; n++) {
      const id = new Uint8Array(32).fill(0xfb);
      new DataView(id.buffer).setUint32(0, n);
      window.attack.announce(id, 'fake');
      window.attack.have(id, (1 << 20) - 1);
      frames += 2;
    }
    return frames;
  });
  expect(sent).toBeGreaterThan(18);
  await flooder.page.waitForFunction(() => window.attack.closed, null, { timeout: 15_000 });
  await waitForPeers(victim, [seeder.id]);
  await droppedFor(victim, 'too many piece bits');
  expect((await victim.page.evaluate(() => window.swarm.files())).filter((f) => f.name === 'fake')).toEqual([]);
  await expectGrowth(victim, before, { js: 4 * MiB, wasm: 4 * MiB }, `announce + far have flood (${sent} frames)`);

  // 4. Manifest requests (33 bytes in, the whole manifest out) for a file the victim shares:
  // 64 MiB in 256 KiB pieces, an 8 KiB manifest. Bound: 8 MiB of manifests per peer per 10 s,
  // so about 1,000 replies; the next request drops the attacker. Memory: what waits in the
  // victim's send queue is at most those 8 MiB (the wasm memory keeps the high-water mark), so
  // at most 8 + 4 MiB of wasm memory and 4 MiB of JS heap.
  const held = await share(victim, 64 * MiB, 23);
  const asker = await attacker(browser, server, 'hostile', victim.id);
  await waitForPeers(victim, [seeder.id, asker.id].sort());
  before = await memory(victim);
  await asker.page.evaluate((id) => {
    const bytes = window.attack.hex(id);
    for (let n = 0; n < 1200; n++) window.attack.requestManifest(bytes);
  }, held.id);
  await asker.page.waitForFunction(() => window.attack.closed, null, { timeout: 30_000 });
  await waitForPeers(victim, [seeder.id]);
  await droppedFor(victim, 'too many manifest requests');
  const replies = await asker.page.evaluate(() => window.attack.manifestBytes);
  console.log(`[memory] manifest requests: 1,200 sent (39,600 bytes), ${(replies / MiB).toFixed(2)} MiB of manifest parts received before the drop`);
  // The attack reached the budget (the drop for it says so): the replies were queued at once,
  // and what had not left when the connection closed went with it, so the attacker saw only
  // the first of them; never more than the budget.
  expect(replies).toBeGreaterThan(0);
  expect(replies).toBeLessThanOrEqual(8 * MiB + 64 * 1024);
  await expectGrowth(victim, before, { js: 4 * MiB, wasm: 12 * MiB }, 'manifest request flood');

  // 5. The victim still downloads from the honest seeder, and still talks.
  const file = await share(seeder, 4 * MiB, 21);
  await startDownload(victim, file.id);
  expect(await finish(victim)).toEqual({ size: 4 * MiB, hash: file.hash });
  await victim.page.evaluate((to) => window.swarm.send(to, 'still here'), seeder.id);
  await seeder.page.waitForFunction(
    (from) => window.events.some((e) => e.type === 'message' && e.from === from && e.data === 'still here'),
    victim.id,
  );
});

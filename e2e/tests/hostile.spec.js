// A hostile peer against a browser: a page that joins through the public signalling protocol
// (v1, no key), opens a raw RTCPeerConnection with a `swarm` data channel to the victim, and
// speaks the peer protocol with hand-made frames. The victim must not panic (the harness fails
// the test on any page error), must drop the attacker with the named bound, and must go on
// working with honest peers.
import { test, expect, joinRoom, waitForPeers, share, startDownload, finish } from './harness.js';

const MiB = 1024 * 1024;

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
    const attack = { frames: [], closed: false, open: false };
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
    attack.announce(attack.bait, 'bait.bin');
    return welcome.id;
  }, { ws: `${server.url.replace(/^http/, 'ws')}/ws/${room}`, victimId });
  return { page, context, id };
}

test('a hostile peer cannot crash a page, is dropped at a bound, and the page goes on working', async ({ browser, server }) => {
  const victim = await joinRoom(browser, server, 'hostile', 'victim');
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

  // 2. More fake contents than a peer may offer: the victim closes the connection.
  await evil.page.evaluate(() => {
    for (let n = 0; n <= 1024; n++) {
      const id = new Uint8Array(32).fill(0xfa);
      new DataView(id.buffer).setUint32(0, n);
      window.attack.announce(id, 'fake');
    }
  });
  await evil.page.waitForFunction(() => window.attack.closed, null, { timeout: 15_000 });
  await waitForPeers(victim, [seeder.id]);
  const files = await victim.page.evaluate(() => window.swarm.files().map((f) => f.name));
  expect(files.filter((name) => name === 'fake')).toEqual([]);
  // Still out a while later (the attacker's page could reconnect; the victim does not answer).
  await victim.page.waitForTimeout(3000);
  expect(await victim.page.evaluate(() => window.swarm.peers())).toEqual([seeder.id]);

  // 3. The victim still downloads from the honest seeder, and still talks.
  const file = await share(seeder, 4 * MiB, 21);
  await startDownload(victim, file.id);
  expect(await finish(victim)).toEqual({ size: 4 * MiB, hash: file.hash });
  await victim.page.evaluate((to) => window.swarm.send(to, 'still here'), seeder.id);
  await seeder.page.waitForFunction(
    (from) => window.events.some((e) => e.type === 'message' && e.from === from && e.data === 'still here'),
    victim.id,
  );
});

// A signalling server that cannot be trusted. A man-in-the-middle relay written for this test
// speaks signalling protocol v1 to two pages and, instead of relaying their offers and
// answers, terminates both sides itself: an attacker page with its own RTCPeerConnections
// answers each page as the other (with its own DTLS certificate) and bridges the two data
// channels, reading everything that passes.
// - With peers that accept unsigned descriptions (v1 rules) the attack works: the pages chat
//   through the attacker and it reads every message. The threat is real.
// - With `requireSigned`, both pages refuse it (`peer-rejected`) and no application byte
//   reaches the attacker.
// - In a secret room the relay sees only sealed signals, no SDP, fingerprint or address, and
//   the pages connect to each other when it forwards honestly; a page with a wrong secret is
//   refused.
// Also here: an unsigned v1 client still connects to a page that does not require signatures,
// and is refused by one that does.
import crypto from 'node:crypto';
import { WebSocketServer } from 'ws';
import { test, expect, joinRoom } from './harness.js';

test.describe.configure({ timeout: 90_000 });

/**
 * A signalling server of one room, written for the test: ids from the client's key (as a
 * real server gives them), `welcome`/`joined`/`left` as in protocol v1, and every `signal`
 * either relayed (`honest`) or handed to `intercept(from, to, data)`. `sent` has the `data`
 * of every signal a client sent, as the server saw it. `sendAs(from, to, data)` delivers a
 * signal that claims to come from `from`.
 */
async function relay() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  const members = new Map();
  const server = {
    url: `ws://127.0.0.1:${wss.address().port}`,
    sent: [],
    intercept: null,
    sendAs(from, to, data) {
      members.get(to)?.send(JSON.stringify({ type: 'signal', from, data }));
    },
    close: () => new Promise((resolve) => {
      for (const socket of members.values()) socket.terminate();
      wss.close(resolve);
    }),
  };
  wss.on('connection', (socket, request) => {
    const query = new URL(request.url, 'http://x').searchParams;
    const key = query.get('key');
    const id = key
      ? crypto.createHash('sha256').update(Buffer.from(key, 'hex')).digest('hex').slice(0, 32)
      : crypto.randomBytes(16).toString('hex');
    socket.send(JSON.stringify({ type: 'welcome', id, peers: [...members.keys()], iceServers: [] }));
    for (const other of members.values()) other.send(JSON.stringify({ type: 'joined', id }));
    members.set(id, socket);
    socket.on('message', (text) => {
      const msg = JSON.parse(text);
      if (msg.type !== 'signal') return;
      server.sent.push(JSON.stringify(msg.data));
      if (server.intercept) server.intercept(id, msg.to, msg.data);
      else server.sendAs(id, msg.to, msg.data);
    });
    socket.on('close', () => {
      members.delete(id);
      for (const other of members.values()) other.send(JSON.stringify({ type: 'left', id }));
    });
  });
  return server;
}

/**
 * The attacker: a page with two RTCPeerConnections per pair of victims, each answering one
 * victim as the other. `strip` removes the victims' signatures; otherwise it passes them on
 * with its own descriptions (the best a relay without the victims' keys can do). What the
 * victims send each other goes through it: `window.mitm.bytes` counts application bytes,
 * `window.mitm.texts` keeps the text messages it read.
 */
async function attacker(browser, pageUrl, server, { strip }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(pageUrl);
  await page.exposeFunction('sendAs', (from, to, data) => server.sendAs(from, to, data));
  await page.evaluate((strip) => {
    const mitm = { bytes: 0, texts: [], opened: 0, pcs: new Map(), channels: new Map() };
    window.mitm = mitm;
    /** The channel towards `real` (posing as `posing`), and the one to forward to. */
    const bridge = (real, posing, channel) => {
      channel.binaryType = 'arraybuffer';
      mitm.channels.set(`${real}>${posing}`, channel);
      channel.onopen = () => { mitm.opened += 1; };
      channel.onmessage = (e) => {
        const other = mitm.channels.get(`${posing}>${real}`);
        if (typeof e.data === 'string') mitm.texts.push(e.data);
        mitm.bytes += typeof e.data === 'string' ? e.data.length : e.data.byteLength;
        if (other && other.readyState === 'open') other.send(e.data);
      };
    };
    /** The connection facing `real`, on which the attacker poses as `posing`. */
    const facing = (real, posing, offerer) => {
      const key = `${real}>${posing}`;
      if (mitm.pcs.has(key)) return mitm.pcs.get(key);
      const pc = new RTCPeerConnection();
      mitm.pcs.set(key, pc);
      pc.onicecandidate = (e) => window.sendAs(posing, real, { candidate: e.candidate ? e.candidate.toJSON() : null });
      pc.ondatachannel = (e) => bridge(real, posing, e.channel);
      if (offerer) bridge(real, posing, pc.createDataChannel('swarm', { ordered: true }));
      return pc;
    };
    // Signals are handled one at a time, in the order they came (candidates wait for the
    // description before them).
    let queue = Promise.resolve();
    mitm.onSignal = (from, to, data) => {
      queue = queue.then(() => handle(from, to, data)).catch(() => {});
    };
    const handle = async (from, to, data) => {
      if (data.sdp && data.sdp.type === 'offer') {
        // Answer `from` as `to`...
        const pc = facing(from, to, false);
        await pc.setRemoteDescription({ type: 'offer', sdp: data.sdp.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        window.sendAs(to, from, { sdp: { type: 'answer', sdp: pc.localDescription.sdp } });
        // ...and offer to `to` as `from`, with `from`'s signature if it is kept.
        const out = facing(to, from, true);
        await out.setLocalDescription(await out.createOffer());
        const sdp = { type: 'offer', sdp: out.localDescription.sdp };
        if (!strip && data.sdp.auth) sdp.auth = data.sdp.auth;
        window.sendAs(from, to, { sdp });
      } else if (data.sdp && data.sdp.type === 'answer') {
        const pc = mitm.pcs.get(`${from}>${to}`);
        if (pc) await pc.setRemoteDescription({ type: 'answer', sdp: data.sdp.sdp }).catch(() => {});
      } else if (data.candidate) {
        const pc = mitm.pcs.get(`${from}>${to}`);
        if (pc) await pc.addIceCandidate(data.candidate).catch(() => {});
      }
    };
  }, strip);
  server.intercept = (from, to, data) => {
    page.evaluate(({ from, to, data }) => window.mitm.onSignal(from, to, data), { from, to, data }).catch(() => {});
  };
  return page;
}

/** A page that joins `room` through `url` (not its own origin), recording events. */
async function joinThrough(browser, pageUrl, url, room, options) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(pageUrl);
  const id = await page.evaluate(async ({ url, room, options }) => {
    const { default: init, Swarm } = await import('/pkg/client_wasm.js');
    await init();
    const swarm = await Swarm.join(url, room, options);
    window.swarm = swarm;
    window.events = [];
    swarm.on('peer-joined', (id) => window.events.push({ type: 'peer-joined', id }));
    swarm.on('peer-rejected', (id, reason) => window.events.push({ type: 'peer-rejected', id, reason }));
    swarm.on('message', (from, data) => window.events.push({ type: 'message', from, data }));
    return swarm.id;
  }, { url, room, options });
  return { page, id };
}

const rejections = (member) => member.page.evaluate(() => window.events.filter((e) => e.type === 'peer-rejected'));
const messages = (member) => member.page.evaluate(() => window.events.filter((e) => e.type === 'message').map((e) => e.data));
const peersOf = (member) => member.page.evaluate(() => window.swarm.peers());

test('v1 rules: a relay that answers each page as the other sits in the middle and reads everything', async ({ browser, server }) => {
  const relayServer = await relay();
  try {
    const spy = await attacker(browser, `${server.url}/`, relayServer, { strip: true });
    const a = await joinThrough(browser, `${server.url}/`, relayServer.url, 'mitm', { requireSigned: false });
    const b = await joinThrough(browser, `${server.url}/`, relayServer.url, 'mitm', { requireSigned: false });
    // Each page believes it is connected to the other...
    await expect.poll(() => peersOf(a), { timeout: 30_000 }).toEqual([b.id]);
    await expect.poll(() => peersOf(b), { timeout: 30_000 }).toEqual([a.id]);
    await b.page.evaluate((to) => window.swarm.send(to, 'meet at noon'), a.id);
    await expect.poll(() => messages(a), { timeout: 15_000 }).toContain('meet at noon');
    // ...but every byte went through the attacker, who read the message.
    expect(await spy.evaluate(() => window.mitm.opened)).toBe(2);
    expect(await spy.evaluate(() => window.mitm.texts)).toContain('meet at noon');
  } finally {
    await relayServer.close();
  }
});

test('requireSigned: both pages refuse the relay in the middle and no application byte reaches it', async ({ browser, server }) => {
  const relayServer = await relay();
  try {
    // Signatures passed on where the attacker has them (its offer carries the victim's).
    const spy = await attacker(browser, `${server.url}/`, relayServer, { strip: false });
    const a = await joinThrough(browser, `${server.url}/`, relayServer.url, 'mitm', { requireSigned: true });
    const b = await joinThrough(browser, `${server.url}/`, relayServer.url, 'mitm', { requireSigned: true });
    // A gets the attacker's offer with B's signature: the fingerprint is not B's.
    await expect.poll(() => rejections(a), { timeout: 20_000 })
      .toContainEqual({ type: 'peer-rejected', id: b.id, reason: 'fingerprint-mismatch' });
    // B gets the attacker's answer, which no key of A's signed.
    await expect.poll(() => rejections(b), { timeout: 20_000 })
      .toContainEqual({ type: 'peer-rejected', id: a.id, reason: 'unsigned' });
    await a.page.waitForTimeout(3000);
    expect(await peersOf(a)).toEqual([]);
    expect(await peersOf(b)).toEqual([]);
    expect(await spy.evaluate(() => window.mitm.bytes)).toBe(0);
    expect(await spy.evaluate(() => window.mitm.opened)).toBe(0);
  } finally {
    await relayServer.close();
  }
});

test('secret room: the relay sees no SDP, fingerprint or address, the pages connect, and a wrong secret is refused', async ({ browser, server }) => {
  const relayServer = await relay();
  try {
    const options = { requireSigned: true, secret: 'Zt3k9QvXc2Lr7mWp1sHa0g' };
    const a = await joinThrough(browser, `${server.url}/`, relayServer.url, 'plans', options);
    const b = await joinThrough(browser, `${server.url}/`, relayServer.url, 'plans', options);
    await expect.poll(() => peersOf(a), { timeout: 30_000 }).toEqual([b.id]);
    await expect.poll(() => peersOf(b), { timeout: 30_000 }).toEqual([a.id]);
    await b.page.evaluate((to) => window.swarm.send(to, 'sealed hello'), a.id);
    await expect.poll(() => messages(a), { timeout: 15_000 }).toContain('sealed hello');
    // The pages' own view of the room keeps its name.
    expect(await a.page.evaluate(() => window.swarm.room)).toBe('plans');
    expect(relayServer.sent.length).toBeGreaterThan(2);
    for (const data of relayServer.sent) {
      expect(data).toMatch(/^\{"sealed":"[A-Za-z0-9_-]+"\}$/);
      // (base64url has no '=', ':', '.' or space, so no SDP line, candidate or address fits.)
      for (const clear of ['v=0', 'a=fingerprint:', 'candidate:', '10.77.0.']) expect(data).not.toContain(clear);
    }
    // A page with another secret, put in the same room by the relay (it could: it is the
    // server), is refused by both members; they stay connected to each other.
    const c = await joinThrough(browser, `${server.url}/`, relayServer.url, 'plans', { ...options, secret: 'a guess' });
    await expect.poll(() => rejections(a), { timeout: 20_000 })
      .toContainEqual({ type: 'peer-rejected', id: c.id, reason: 'cannot-open' });
    expect(await peersOf(c)).toEqual([]);
    expect(await peersOf(a)).toEqual([b.id]);
  } finally {
    await relayServer.close();
  }
});

test('the server sees a name derived from the secret, never the room name', async ({ browser, server }) => {
  const seen = [];
  // Record the URLs the page opens.
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('websocket', (socket) => seen.push(socket.url()));
  await page.goto(`${server.url}/`);
  await page.evaluate(async () => {
    const { default: init, Swarm } = await import('/pkg/client_wasm.js');
    await init();
    window.swarm = await Swarm.join(location.origin, 'our-plans', { secret: 'k' });
  });
  expect(seen.length).toBe(1);
  expect(seen[0]).toMatch(/\/ws\/s-[0-9a-f]{32}\?/);
  expect(seen[0]).not.toContain('our-plans');
  const refused = await page.evaluate(async () => {
    const { Swarm } = await import('/pkg/client_wasm.js');
    try {
      await Swarm.join(location.origin, 'x', { secret: '' });
      return null;
    } catch (err) {
      return { name: err.name, code: err.code };
    }
  });
  expect(refused).toEqual({ name: 'SwarmError', code: 'invalid-option' });
});

/**
 * A protocol v1 client without a key (a raw RTCPeerConnection and hand-written signalling)
 * joins `room` on the real server and offers to `victimId`. `window.v1` has `open` and
 * `send(text)`.
 */
async function v1Client(browser, server, room, victimId) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.url}/`);
  const ws = `${server.url.replace('http', 'ws')}/ws/${room}`;
  await page.evaluate(async ({ ws, victimId }) => {
    const v1 = { open: false };
    window.v1 = v1;
    const socket = new WebSocket(ws);
    await new Promise((resolve) => {
      socket.onmessage = (e) => { if (JSON.parse(e.data).type === 'welcome') resolve(); };
    });
    const signal = (data) => socket.send(JSON.stringify({ type: 'signal', to: victimId, data }));
    const pc = new RTCPeerConnection();
    const dc = pc.createDataChannel('swarm', { ordered: true });
    dc.onopen = () => { v1.open = true; dc.send(Uint8Array.of(0x01, 2)); };
    v1.send = (text) => dc.send(text);
    socket.onmessage = async (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type !== 'signal') return;
      if (msg.data.sdp) await pc.setRemoteDescription(msg.data.sdp);
      else if (msg.data.candidate) await pc.addIceCandidate(msg.data.candidate).catch(() => {});
    };
    pc.onicecandidate = (e) => signal({ candidate: e.candidate ? e.candidate.toJSON() : null });
    await pc.setLocalDescription(await pc.createOffer());
    signal({ sdp: { type: 'offer', sdp: pc.localDescription.sdp } });
  }, { ws, victimId });
  return page;
}

test('an unsigned v1 client connects to a page that allows it and is refused by one that requires signatures', async ({ browser, server }) => {
  const open = await joinRoom(browser, server, 'v1-open', 'open', { requireSigned: false });
  const client = await v1Client(browser, server, 'v1-open', open.id);
  await expect.poll(() => client.evaluate(() => window.v1.open), { timeout: 20_000 }).toBe(true);
  await expect.poll(() => open.page.evaluate(() => window.swarm.peers().length), { timeout: 20_000 }).toBe(1);
  await client.evaluate(() => window.v1.send('from a v1 client'));
  await expect.poll(() => open.page.evaluate(() => window.events.filter((e) => e.type === 'message').map((e) => e.data)), { timeout: 10_000 })
    .toContain('from a v1 client');

  const strict = await joinRoom(browser, server, 'v1-strict', 'strict', { requireSigned: true });
  await strict.page.evaluate(() => {
    window.rejected = [];
    window.swarm.on('peer-rejected', (id, reason) => window.rejected.push({ id, reason }));
  });
  const refused = await v1Client(browser, server, 'v1-strict', strict.id);
  await expect.poll(() => strict.page.evaluate(() => window.rejected.map((r) => r.reason)), { timeout: 20_000 }).toContain('unsigned');
  await strict.page.waitForTimeout(2000);
  expect(await refused.evaluate(() => window.v1.open)).toBe(false);
  expect(await strict.page.evaluate(() => window.swarm.peers())).toEqual([]);
});

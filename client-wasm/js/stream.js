// Page side of media streaming: answers the service worker's range requests for
// `<scope>stream/<contentId>` from the swarms on this page. Imported by the WASM client.

const readers = new Set();
let listening = false;

function listen() {
  if (listening || !('serviceWorker' in navigator)) return;
  listening = true;
  navigator.serviceWorker.addEventListener('message', async (event) => {
    const msg = event.data;
    if (!msg || msg.type !== 'swarm-range' || !event.ports[0]) return;
    const port = event.ports[0];
    let last = { ok: false, status: 404, error: `no swarm on this page holds ${msg.id}` };
    for (const read of readers) {
      try {
        const reply = await read(msg.id, msg.start, msg.end);
        port.postMessage({ ok: true, size: reply.size, mime: reply.mime, start: reply.start, data: reply.data.buffer },
          [reply.data.buffer]);
        return;
      } catch (err) {
        const status = err && err.code === 'range-not-satisfiable' ? 416
          : err && (err.code === 'unknown-content' || err.code === 'left') ? 404 : 500;
        last = { ok: false, status, error: String((err && err.message) || err) };
        if (status !== 404) break;
      }
    }
    port.postMessage(last);
  });
}

/** Lets `read(id, start, end)` answer range requests; returns a function that stops it. */
export function addRangeReader(read) {
  listen();
  readers.add(read);
  return () => readers.delete(read);
}

/**
 * Registers the streaming service worker at `url` and waits until it controls this page.
 * Resolves with the worker's scope, under which `stream/<contentId>` is served.
 */
export async function registerStreamWorker(url) {
  if (!('serviceWorker' in navigator)) {
    throw new Error('service workers are not available (an insecure context?)');
  }
  const registration = await navigator.serviceWorker.register(url);
  if (!navigator.serviceWorker.controller) {
    await new Promise((resolve) => {
      navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true });
      if (navigator.serviceWorker.controller) resolve();
    });
  }
  return registration.scope;
}

// ---- without a service worker: MediaSource ----

/** Bytes appended to a SourceBuffer at a time. */
const APPEND_LEN = 1024 * 1024;
/** Seconds buffered ahead of playback before the feeder waits. */
const AHEAD_SECONDS = 30;
/** Seconds kept behind playback when the browser's buffer is full. */
const BEHIND_SECONDS = 10;

/** `read(id, start, end)` through the first reader that holds `id`. */
async function readRange(id, start, end) {
  let last = null;
  for (const read of readers) {
    try {
      return await read(id, start, end);
    } catch (err) {
      last = err;
    }
  }
  throw last || new Error(`no swarm on this page holds ${id}`);
}

const WEBM_CODECS = [
  ['V_VP8', 'vp8'], ['V_VP9', 'vp9'], ['V_AV1', 'av01.0.08M.08'],
  ['A_OPUS', 'opus'], ['A_VORBIS', 'vorbis'],
];

/** The MediaSource type of a WebM file from the codec ids in its header, or null. */
function webmType(mime, header) {
  if (header[0] !== 0x1a || header[1] !== 0x45 || header[2] !== 0xdf || header[3] !== 0xa3) return null;
  const text = new TextDecoder('latin1').decode(header.subarray(0, 64 * 1024));
  const codecs = WEBM_CODECS.filter(([tag]) => text.includes(tag)).map(([, codec]) => codec);
  if (codecs.length === 0) return null;
  const kind = /^audio\//.test(mime) || !codecs.some((c) => /^(vp|av)/.test(c)) ? 'audio' : 'video';
  return `${kind}/webm; codecs="${codecs.join(', ')}"`;
}

function appended(buffer, data) {
  return new Promise((resolve, reject) => {
    buffer.addEventListener('updateend', resolve, { once: true });
    buffer.addEventListener('error', () => reject(new Error('the browser refused the media data')), { once: true });
    buffer.appendBuffer(data);
  });
}

function removed(buffer, start, end) {
  return new Promise((resolve) => {
    buffer.addEventListener('updateend', resolve, { once: true });
    buffer.remove(start, end);
  });
}

/**
 * A `blob:` URL that plays content `id` while it downloads, fed through MediaSource from the
 * swarms on this page: for a page with no service worker (an insecure context, or a
 * certificate the browser only has an exception for). Only WebM can be fed this way without
 * demuxing (MP4 would have to be fragmented); anything else is refused with the reason. Plays
 * from the start; seeking works within what has been fed.
 */
export async function mediaSourceUrl(id) {
  if (!self.MediaSource) throw new Error('MediaSource is not available either');
  const first = await readRange(id, 0, 64 * 1024 - 1);
  const type = webmType(first.mime, first.data);
  if (!type) throw new Error(`MediaSource can only play WebM without a service worker, and this file (${first.mime || 'no type'}) is not WebM`);
  if (!MediaSource.isTypeSupported(type)) throw new Error(`this browser cannot play ${type}`);
  const source = new MediaSource();
  const url = URL.createObjectURL(source);
  source.addEventListener('sourceopen', async () => {
    URL.revokeObjectURL(url);
    const buffer = source.addSourceBuffer(type);
    const media = () => document.querySelector(`video[src="${url}"], audio[src="${url}"]`);
    let at = 0;
    try {
      while (at < first.size && source.readyState === 'open') {
        const el = media();
        const ahead = el && buffer.buffered.length ? buffer.buffered.end(buffer.buffered.length - 1) - el.currentTime : 0;
        if (ahead > AHEAD_SECONDS) {
          await new Promise((resolve) => setTimeout(resolve, 500));
          continue;
        }
        const reply = at === 0 ? first : await readRange(id, at, Math.min(first.size, at + APPEND_LEN) - 1);
        try {
          await appended(buffer, reply.data);
        } catch (err) {
          // The browser's buffer is full: drop what was played, then try again.
          if (!el || el.currentTime < BEHIND_SECONDS + 1) throw err;
          await removed(buffer, 0, el.currentTime - BEHIND_SECONDS);
          continue;
        }
        at += reply.data.length;
      }
      if (source.readyState === 'open') source.endOfStream();
    } catch (err) {
      if (source.readyState === 'open') source.endOfStream('decode');
      console.warn(`swarm: streaming ${id} through MediaSource stopped: ${err.message || err}`);
    }
  }, { once: true });
  return url;
}

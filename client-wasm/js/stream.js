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

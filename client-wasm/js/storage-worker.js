// Storage worker: keeps downloads in the Origin Private File System with synchronous access
// handles, so pieces are written at their offset as they arrive and a multi-GiB file never
// sits in memory. The client starts it from a Blob URL; every request carries a `seq` that
// the reply echoes.
//
// Requests: {seq, op: 'open', name, size} | {seq, op: 'write', name, offset, data, sha256?} |
//           {seq, op: 'read', name, offset, len} | {seq, op: 'close', name} |
//           {seq, op: 'remove', name}
// Replies:  {seq, ok: true, data?, buffer?} | {seq, ok: false, error}
// A write with `sha256` (32 bytes) hashes `data` first and writes it only if it matches: its
// reply's `data` says whether it did. (The browser's SHA-256 is many times faster than one
// compiled to WebAssembly, and here it does not hold up the page.)
//
// Writes that continue one another (pieces arrive in runs) are gathered and written together,
// up to GATHER bytes or once IDLE_MS pass without the next one: each write costs a system call
// (and in an incognito context, where the file lives in the browser process's memory, a round
// trip to that process), so 4 MiB at a time took about half the CPU of 256 KiB at a time
// (measured in incognito). Their replies wait for the write; any other request writes what
// is gathered first, so replies still come in order and a read sees every write before it.
// Pieces are gathered into one buffer kept for the worker's life, and the reply to a write
// that was stored hands its `data` buffer back (`buffer`, transferred) for the page to fill
// again: allocating and faulting in fresh memory for every piece cost more than copying it.
const GATHER = 4 * 1024 * 1024;
const IDLE_MS = 20;
const handles = new Map();
let dir = null;
/** Gathered writes: {name, offset, length, parts: [Uint8Array], seqs: [seq]}, or null. */
let gathered = null;
let idle = null;
/** Where gathered pieces are put together (allocated once). */
let gatherBuffer = null;

async function directory() {
  if (!dir) {
    const root = await navigator.storage.getDirectory();
    dir = await root.getDirectoryHandle('swarm', { create: true });
  }
  return dir;
}

function writeAll(access, bytes, offset) {
  let written = 0;
  while (written < bytes.length) {
    written += access.write(bytes.subarray(written), { at: offset + written });
  }
}

/** Writes what is gathered and replies to each of its writes. */
function flush() {
  clearTimeout(idle);
  idle = null;
  if (!gathered) return;
  const { name, offset, length, parts, seqs } = gathered;
  gathered = null;
  try {
    const access = handles.get(name);
    if (!access) throw new Error(`${name} is not open`);
    let bytes = parts[0];
    if (parts.length > 1) {
      // Several parts are together at most GATHER bytes (see `gather`).
      gatherBuffer ||= new Uint8Array(GATHER);
      bytes = gatherBuffer.subarray(0, length);
      let at = 0;
      for (const part of parts) {
        bytes.set(part, at);
        at += part.length;
      }
    }
    writeAll(access, bytes, offset);
    seqs.forEach((seq, i) => {
      const buffer = parts[i].buffer;
      self.postMessage({ seq, ok: true, data: true, buffer }, [buffer]);
    });
  } catch (err) {
    for (const seq of seqs) self.postMessage({ seq, ok: false, error: `${err.name}: ${err.message}` });
  }
}

/** Adds a verified write to what is gathered (writing that first if this one does not
 *  continue it); its reply is sent by `flush`. */
function gather(seq, name, offset, bytes) {
  const continues = gathered && gathered.name === name && gathered.offset + gathered.length === offset;
  if (gathered && (!continues || gathered.length + bytes.length > GATHER)) flush();
  if (!gathered) gathered = { name, offset, length: 0, parts: [], seqs: [] };
  gathered.parts.push(bytes);
  gathered.length += bytes.length;
  gathered.seqs.push(seq);
  clearTimeout(idle);
  idle = setTimeout(() => { queue = queue.then(flush); }, IDLE_MS);
}

function equal(a, b) {
  const [x, y] = [new Uint8Array(a), new Uint8Array(b)];
  return x.length === y.length && x.every((byte, i) => byte === y[i]);
}

/** Handles one request; resolves to its reply, or to `null` when the reply comes later. */
async function handle(request) {
  const { op, name } = request;
  if (op !== 'write') flush();
  switch (op) {
    case 'open': {
      if (handles.has(name)) return {};
      const file = await (await directory()).getFileHandle(name, { create: true });
      const access = await file.createSyncAccessHandle();
      access.truncate(request.size);
      handles.set(name, access);
      return {};
    }
    case 'write': {
      const access = handles.get(name);
      if (!access) throw new Error(`${name} is not open`);
      const bytes = new Uint8Array(request.data);
      if (request.sha256 && !equal(await crypto.subtle.digest('SHA-256', bytes), request.sha256)) {
        flush();
        return { data: false };
      }
      gather(request.seq, name, request.offset, bytes);
      return null;
    }
    case 'read': {
      const access = handles.get(name);
      if (!access) {
        // Closed (complete): read the file itself.
        const file = await (await (await directory()).getFileHandle(name)).getFile();
        const end = request.offset + request.len;
        const data = await file.slice(request.offset, end).arrayBuffer();
        if (data.byteLength !== request.len) throw new Error(`short read of ${name}`);
        return { data, transfer: [data] };
      }
      const bytes = new Uint8Array(request.len);
      const read = access.read(bytes, { at: request.offset });
      if (read !== request.len) throw new Error(`short read: ${read} of ${request.len} bytes`);
      return { data: bytes.buffer, transfer: [bytes.buffer] };
    }
    case 'close': {
      const access = handles.get(name);
      if (access) {
        access.flush();
        access.close();
        handles.delete(name);
      }
      return {};
    }
    case 'remove': {
      const access = handles.get(name);
      if (access) {
        access.close();
        handles.delete(name);
      }
      await (await directory()).removeEntry(name).catch(() => {});
      return {};
    }
    default:
      throw new Error(`unknown storage operation ${op}`);
  }
}

// Requests are handled one at a time, in order, so a read never overtakes the write before it.
let queue = Promise.resolve();
self.onmessage = (event) => {
  const request = event.data;
  queue = queue.then(async () => {
    try {
      const reply = await handle(request);
      if (reply) self.postMessage({ seq: request.seq, ok: true, data: reply.data }, reply.transfer || []);
    } catch (err) {
      self.postMessage({ seq: request.seq, ok: false, error: `${err.name}: ${err.message}` });
    }
  });
};

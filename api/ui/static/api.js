// The /v1 api as the console calls it: the bearer token, JSON, problem+json errors, and the
// event stream read with fetch (EventSource cannot send an Authorization header).

const TOKEN_KEY = 'agentlog.console.token';
// The api's root, relative to the page (/ui/), so the console works behind a path prefix.
const ROOT = new URL('../', document.baseURI);

/** The token this tab keeps (sessionStorage: gone when the tab closes). */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value.trim()),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** A token passed in the URL fragment (`/ui/#token=…`) is kept and removed from the address. */
export function takeTokenFromFragment() {
  const match = location.hash.match(/(^#|[&?])token=([^&]*)/);
  if (!match) return;
  token.set(decodeURIComponent(match[2]));
  let rest = location.hash.replace(match[0], match[1] === '#' ? '#' : '').replace(/[&?]$/, '');
  if (rest === '#' || rest === '') rest = '#/sessions';
  history.replaceState(null, '', location.pathname + location.search + rest);
}

/** An error answer of the api (problem+json), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, problem, text) {
    const detail = problem && (problem.detail || problem.title);
    super(detail ? `${status}: ${detail}` : status ? `HTTP ${status}` : text || 'network error');
    this.status = status;
    this.problem = problem;
  }
}

function headers(extra = {}) {
  const out = { Accept: 'application/json', ...extra };
  const t = token.get();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

/** Call the api: `api('v1/sessions', {query, method, body, headers})`; resolves to the JSON body. */
export async function api(path, { method = 'GET', query, body, headers: extra } = {}) {
  const url = new URL(path, ROOT);
  for (const [k, v] of Object.entries(query || {})) {
    if (v != null && v !== '') url.searchParams.set(k, v);
  }
  const init = { method, headers: headers(extra), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, null, String(err));
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data, text);
  return data;
}

/** A fresh Idempotency-Key (crypto.randomUUID needs a secure context; getRandomValues does not). */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Server-sent events of a response body: {event, data, id} per block (comments skipped). */
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: 'message', data: '', id: null };
      const data = [];
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'data') data.push(val);
        else if (field === 'event') event.event = val;
        else if (field === 'id') event.id = val;
      }
      if (data.length === 0 && event.id === null) continue;
      event.data = data.join('\n');
      yield event;
    }
  }
}

/**
 * A session's events, live: every stored event after `after`, then each new one as it is
 * projected, and the model's text deltas. A dropped connection is opened again with
 * `Last-Event-ID` (the last sequence number seen), so nothing is missed or seen twice;
 * going offline and online again reconnects at once. `onEvent({event, data, id})`,
 * `onState('live' | 'reconnecting' | 'waiting' | 'closed', error)`. Returns {close, reconnect}.
 */
export function follow(sessionId, { onEvent, onState, after = 0 }) {
  let last = after;
  let closed = false;
  let current = null;
  let kick = null;
  let backoff = 500;
  const wake = () => kick && kick();
  const reconnect = () => {
    backoff = 500;
    if (current) current.abort();
    wake();
  };
  const offline = () => current && current.abort();
  window.addEventListener('online', reconnect);
  window.addEventListener('offline', offline);

  async function run() {
    while (!closed) {
      current = new AbortController();
      try {
        const h = headers({ Accept: 'text/event-stream' });
        if (last > 0) h['Last-Event-ID'] = String(last);
        const url = new URL(`v1/sessions/${encodeURIComponent(sessionId)}/events/stream`, ROOT);
        const response = await fetch(url, { headers: h, signal: current.signal, cache: 'no-store' });
        if (response.status === 404) {
          onState('waiting', new Error('no such session (yet)'));
        } else if (!response.ok) {
          let problem = null;
          try {
            problem = await response.json();
          } catch {
            problem = null;
          }
          const err = new ApiError(response.status, problem);
          if (response.status === 401) {
            onState('closed', err);
            return;
          }
          onState('reconnecting', err);
        } else {
          onState('live');
          backoff = 500;
          for await (const event of serverSentEvents(response.body)) {
            if (event.id !== null && /^\d+$/.test(event.id)) last = Number(event.id);
            onEvent(event);
          }
          if (!closed) onState('reconnecting', new Error('the stream ended'));
        }
      } catch (err) {
        if (closed) return;
        onState('reconnecting', navigator.onLine ? err : new Error('offline'));
      }
      await new Promise((resolve) => {
        kick = resolve;
        setTimeout(resolve, backoff);
      });
      kick = null;
      backoff = Math.min(backoff * 2, 5000);
    }
  }
  run();
  return {
    reconnect,
    close() {
      closed = true;
      window.removeEventListener('online', reconnect);
      window.removeEventListener('offline', offline);
      if (current) current.abort();
      wake();
    },
    get last() {
      return last;
    },
  };
}

// Elements built from text only. Nothing here (or anywhere in the console) parses a string
// as HTML: model and tool text is untrusted and must stay text (tests/unit/test_console_bundle.py).

/** An element with attributes, listeners (`on<event>`: functions only) and children (nodes or text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key.startsWith('on')) {
      if (typeof value !== 'function') throw new TypeError(`${key} must be a function`);
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, ...children);
  return el;
}

/** Append nodes or text (as text nodes) to an element. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, ...children);
}

/** A preformatted block that scrolls; focusable so that keyboards can scroll it. */
export function pre(text, cls = '') {
  return h('pre', { class: cls, tabindex: 0 }, text);
}

/** A link inside the console: `#/` and the route's parts, each encoded. */
export function link(text, ...parts) {
  return h('a', { href: route(...parts) }, text);
}

/** The console's address of a route. */
export function route(...parts) {
  return '#/' + parts.map((p) => encodeURIComponent(p)).join('/');
}

/** Tell screen readers (and the status line) what happened. */
export function say(text) {
  const status = document.getElementById('status');
  if (status) status.textContent = text;
}

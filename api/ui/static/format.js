// Numbers, money, times and durations as people read them.

const money = new Intl.NumberFormat('en-US', {
  style: 'currency',
  currency: 'USD',
  minimumFractionDigits: 2,
  maximumSignificantDigits: 3,
});
const tiny = new Intl.NumberFormat('en-US', { maximumSignificantDigits: 2, maximumFractionDigits: 10 });
const count = new Intl.NumberFormat('en-US');

/** A cost given as a decimal string (or null: unknown), never `0E-10`. */
export function cost(value) {
  if (value == null) return 'unknown';
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (n === 0) return '$0';
  if (n < 0.01) return '$' + tiny.format(n);
  return money.format(n);
}

/** A whole number with separators. */
export function int(value) {
  return value == null ? '–' : count.format(Math.round(Number(value)));
}

/** Tokens in / out. */
export function tokens(usage) {
  if (!usage) return '–';
  return `${int(usage.input)} in / ${int(usage.output)} out`;
}

/** Milliseconds as `850 ms`, `1.2 s` or `3 min 5 s`. */
export function duration(ms) {
  if (ms == null) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** An ISO time as local date and time. */
export function when(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** A value as indented JSON. */
export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** Content blocks (or a string) as the text a person reads. */
export function blocksText(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return json(content);
  return content
    .map((b) => {
      if (b.type === 'text') return b.text;
      if (b.type === 'image') return '[image]';
      if (b.type === 'document') return '[document]';
      return json(b);
    })
    .join('\n');
}

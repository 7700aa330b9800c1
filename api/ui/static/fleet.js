// The fleet: the instances `agentlog top` shows, each role's and the fleet's totals, the
// outliers flagged.

import { api } from './api.js';
import { append, h, replace } from './dom.js';
import { cost, duration, int } from './format.js';

const POLL_MS = 5000;
const COLUMNS = ['Instance', 'Role', 'Work', 'Errors', 'Mean duration', 'Steps/turn', 'Tokens in/out', 'Cost', 'Lag', 'Dead letters', 'Flags'];

function pct(v) {
  return v == null ? '–' : `${(v * 100).toFixed(1)}%`;
}

function row(s, kind) {
  const Cell = kind === 'instance' ? 'th' : 'td';
  return h(
    'tr',
    { class: s.flags.length ? 'flagged' : kind },
    h(Cell, kind === 'instance' ? { scope: 'row' } : {}, s.instance_id + (s.up ? '' : ' (down)')),
    h('td', {}, s.role),
    h('td', { class: 'num' }, int(s.work)),
    h('td', { class: 'num' }, pct(s.error_rate)),
    h('td', { class: 'num' }, s.mean_duration_s == null ? '–' : duration(s.mean_duration_s * 1000)),
    h('td', { class: 'num' }, s.steps_per_turn == null ? '–' : s.steps_per_turn.toFixed(2)),
    h('td', { class: 'num' }, `${int(s.tokens_in)} / ${int(s.tokens_out)}`),
    h('td', { class: 'num' }, cost(String(s.cost_usd))),
    h('td', { class: 'num' }, int(s.lag)),
    h('td', { class: 'num' }, int(s.dead_letters)),
    h('td', {}, s.flags.length ? h('strong', {}, '⚑ ', s.flags.join('; ')) : ''),
  );
}

/** The fleet page (read again every few seconds). */
export function fleetView(main, failed) {
  const outliers = h('div');
  const body = h('tbody');
  const note = h('p', { class: 'muted' });
  append(
    main,
    h('h1', {}, 'Fleet'),
    h('p', {}, 'Every live process, totals since each started; an instance is flagged when it stands out from its role’s peers (median + k × MAD).'),
    outliers,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        {},
        h('caption', { class: 'visually-hidden' }, 'Instances of the fleet'),
        h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col' }, c)))),
        body,
      ),
    ),
    note,
  );

  async function load() {
    try {
      const snap = await api('v1/fleet');
      replace(
        outliers,
        snap.outliers.length
          ? h('section', { class: 'card warn', 'aria-label': 'Outliers' }, h('h2', {}, 'Outliers'), h('ul', {}, snap.outliers.map((o) => h('li', {}, h('strong', {}, o.instance_id), ` (${o.role}): ${o.flags.join('; ')}`))))
          : h('p', { class: 'muted' }, 'No outliers.'),
      );
      replace(
        body,
        snap.instances.map((s) => row(s, 'instance')),
        Object.values(snap.roles).map((s) => row(s, 'role')),
        row(snap.fleet, 'total'),
      );
      note.textContent = `Read at ${new Date().toLocaleTimeString()}.`;
    } catch (err) {
      failed(note, err);
    }
  }

  load();
  const timer = setInterval(load, POLL_MS);
  return () => clearInterval(timer);
}

// The tenant's sessions, filtered by status, model and start time, with tokens and cost.

import { api } from './api.js';
import { append, h, link, replace, route, say } from './dom.js';
import { cost, int, when } from './format.js';

function field(label, control) {
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control);
}

/** The sessions page. */
export function sessionsView(main, failed) {
  const status = h(
    'select',
    { id: 'f-status', name: 'status' },
    h('option', { value: '' }, 'any'),
    ['idle', 'running', 'expired'].map((s) => h('option', { value: s }, s)),
  );
  const model = h('input', { id: 'f-model', name: 'model', type: 'text', placeholder: 'any' });
  const after = h('input', { id: 'f-after', name: 'started_after', type: 'datetime-local' });
  const before = h('input', { id: 'f-before', name: 'started_before', type: 'datetime-local' });
  const rows = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'More');
  const note = h('p', { class: 'muted' });
  let next = null;

  const iso = (input) => (input.value ? new Date(input.value).toISOString() : null);

  async function load(append_ = false) {
    const query = {
      status: status.value,
      model: model.value.trim(),
      started_after: iso(after),
      started_before: iso(before),
      limit: 50,
      after: append_ ? next : null,
    };
    try {
      const page = await api('v1/sessions', { query });
      if (!append_) replace(rows);
      for (const s of page.data) rows.append(row(s));
      next = page.has_more ? page.last_id : null;
      more.hidden = !page.has_more;
      note.textContent = rows.children.length ? '' : 'No sessions match.';
      say(`${rows.children.length} sessions shown`);
    } catch (err) {
      failed(note, err);
    }
  }

  function row(s) {
    const t = s.total_tokens;
    return h(
      'tr',
      {},
      h('th', { scope: 'row' }, link(s.id, 'sessions', s.id)),
      h('td', {}, h('span', { class: `badge s-${s.status}` }, s.status)),
      h('td', {}, s.model || '–'),
      h('td', { class: 'num' }, int(s.turn_count)),
      h('td', { class: 'num' }, t ? int(t.input + t.cache_read + t.cache_write) : '–'),
      h('td', { class: 'num' }, t ? int(t.output) : '–'),
      h('td', { class: 'num' }, cost(s.cost_usd)),
      h('td', {}, when(s.started_at)),
      h('td', {}, when(s.last_activity_at)),
      h('td', {}, s.parent_session_id ? link(s.parent_session_id, 'sessions', s.parent_session_id) : ''),
    );
  }

  const open = h('input', { id: 'open-id', type: 'text', required: true, pattern: '[A-Za-z0-9._:\\-]+' });
  append(
    main,
    h('h1', {}, 'Sessions'),
    h(
      'form',
      {
        class: 'filters',
        'aria-label': 'Filter sessions',
        onsubmit: (e) => {
          e.preventDefault();
          load();
        },
        onchange: () => load(),
      },
      field('Status', status),
      field('Model', model),
      field('Started after', after),
      field('Started before', before),
      h('button', { type: 'submit' }, 'Filter'),
    ),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        {},
        h('caption', { class: 'visually-hidden' }, 'Sessions of this tenant'),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ['Session', 'Status', 'Model', 'Turns', 'Tokens in', 'Tokens out', 'Cost', 'Started', 'Last activity', 'Parent'].map(
              (c) => h('th', { scope: 'col' }, c),
            ),
          ),
        ),
        rows,
      ),
    ),
    note,
    more,
    h(
      'form',
      {
        class: 'filters',
        'aria-label': 'Open a session',
        onsubmit: (e) => {
          e.preventDefault();
          location.hash = route('sessions', open.value.trim());
        },
      },
      field('Open or start a session by id', open),
      h('button', { type: 'submit' }, 'Open'),
    ),
  );
  more.addEventListener('click', () => load(true));
  load();
  return () => {};
}

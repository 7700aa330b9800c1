// The approvals inbox: the tenant's tool calls waiting for a human, approve or deny.

import { api } from './api.js';
import { append, h, link, pre, replace, say } from './dom.js';
import { json, when } from './format.js';

const POLL_MS = 2000;

/** The approvals page (read again every few seconds). */
export function approvalsView(main, failed) {
  const list = h('div', { class: 'inbox' });
  const note = h('p', { class: 'muted' });
  append(main, h('h1', {}, 'Approvals'), h('p', {}, 'Tool calls waiting for a human. The turn goes on once you decide; a denial is an error result the model reads.'), note, list);
  let shown = '';

  async function decide(a, decision, reason) {
    try {
      await api(`v1/sessions/${encodeURIComponent(a.session_id)}/approvals/${encodeURIComponent(a.approval_id)}`, {
        method: 'POST',
        body: reason ? { decision, reason } : { decision },
      });
      say(`${a.name} in ${a.session_id} ${decision === 'approve' ? 'approved' : 'denied'}`);
      load();
    } catch (err) {
      failed(note, err);
    }
  }

  function item(a) {
    const reasonId = `reason-${a.approval_id}`;
    const reason = h('input', { id: reasonId, type: 'text', maxlength: 2000 });
    return h(
      'article',
      { class: 'card approval-item', 'data-approval': a.approval_id, 'aria-label': `${a.name} in ${a.session_id}` },
      h('h2', {}, h('span', { class: 'tool-name' }, a.name), ' in ', link(a.session_id, 'sessions', a.session_id)),
      h('p', { class: 'meta' }, `asked ${when(a.requested_at)}`),
      h('p', { class: 'label' }, 'Input'),
      pre(json(a.input)),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', onclick: () => decide(a, 'approve') }, `Approve ${a.name}`),
        h('label', { for: reasonId }, 'Reason (told to the model on deny)'),
        reason,
        h('button', { type: 'button', class: 'danger-outline', onclick: () => decide(a, 'deny', reason.value.trim()) }, `Deny ${a.name}`),
      ),
    );
  }

  async function load() {
    try {
      const page = await api('v1/approvals', { query: { status: 'pending' } });
      const ids = page.data.map((a) => a.approval_id).join(',');
      if (ids === shown) return; // keep what the user is typing
      shown = ids;
      replace(list, page.data.map(item));
      note.textContent = page.data.length ? `${page.data.length} waiting` : 'Nothing waits for approval.';
    } catch (err) {
      failed(note, err);
    }
  }

  load();
  const timer = setInterval(load, POLL_MS);
  return () => clearInterval(timer);
}

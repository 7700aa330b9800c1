// One session's transcript as a person reads it, live: user and assistant messages, thinking
// collapsed, each tool call with its input, result, duration and idempotency class, sub-agents
// as links to their child sessions, each turn's cost and latency. Built from the session's
// event stream (every stored event, then live ones; resumed after a reconnect), with the
// turns' and tool calls' rows read again when a turn or a call ends.

import { api, follow, newKey } from './api.js';
import { append, h, link, pre, replace, route, say } from './dom.js';
import { blocksText, cost, duration, int, json, tokens, when } from './format.js';

const CLASSES = {
  read_or_fetch: 'read/fetch: a recorded result is reused; a call cut short runs again',
  guarded_write: 'guarded write: checked against its recorded intent before it runs again',
  write: 'write: never run twice; a start without a result is "outcome unknown"',
  agent: 'sub-agent: a child session of its own',
};

/** Run `fn` once, `ms` after the last of a burst of calls. */
function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

/** The page of one session. */
export function sessionView(main, id, failed) {
  const turns = new Map(); // turn_id -> {section, body, footer, lastSeq, index}
  const tools = new Map(); // tool_use_id -> card parts
  const streaming = new Map(); // `${turn}/${step}` -> {box, text} of a message still streaming
  let history = null;
  let waiting = false; // the session does not exist (yet)

  const title = h('h1', {}, 'Session ', h('span', { class: 'mono' }, id));
  const meta = h('p', { class: 'meta' });
  const lineage = h('p', { class: 'meta' });
  const live = h('span', { class: 'badge', id: 'live-state' }, 'connecting');
  const problems = h('div');
  const transcript = h('div', { class: 'transcript', id: 'transcript' });
  const confirmDelete = h('button', { type: 'button', class: 'danger', hidden: true }, 'Yes, delete it');
  const actions = h(
    'div',
    { class: 'actions' },
    h('button', { type: 'button', onclick: () => fork(null) }, 'Fork session'),
    h(
      'button',
      {
        type: 'button',
        class: 'danger-outline',
        onclick: () => {
          confirmDelete.hidden = false;
          confirmDelete.focus();
        },
      },
      'Delete session',
    ),
    confirmDelete,
  );
  const message = h('textarea', { id: 'message', rows: 3, required: true });
  const send = h('button', { type: 'submit' }, 'Send');
  const composer = h(
    'form',
    { class: 'composer', 'aria-label': 'Send a message', onsubmit: post },
    h('label', { for: 'message' }, 'Message'),
    message,
    send,
  );
  append(
    main,
    h('p', {}, link('← Sessions', 'sessions')),
    title,
    h('div', { class: 'session-head' }, meta, h('p', { class: 'meta' }, 'Stream: ', live)),
    lineage,
    actions,
    problems,
    transcript,
    composer,
  );

  confirmDelete.addEventListener('click', async () => {
    try {
      await api(`v1/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' });
      say(`Session ${id} deleted`);
      location.hash = route('sessions');
    } catch (err) {
      failed(problems, err);
    }
  });

  async function post(e) {
    e.preventDefault();
    const content = message.value;
    if (!content.trim()) return;
    send.disabled = true;
    try {
      await api(`v1/sessions/${encodeURIComponent(id)}/messages`, {
        method: 'POST',
        body: { content },
        headers: { 'Idempotency-Key': newKey() },
      });
      message.value = '';
      say('Message sent');
      if (waiting) stream.reconnect(); // a new session: its stream can start now
    } catch (err) {
      failed(problems, err);
    } finally {
      send.disabled = false;
    }
  }

  async function fork(atSeq) {
    try {
      const made = await api(`v1/sessions/${encodeURIComponent(id)}/fork`, {
        method: 'POST',
        body: atSeq ? { at_seq: atSeq } : {},
      });
      say(`Forked into ${made.id}`);
      location.hash = route('sessions', made.id);
    } catch (err) {
      failed(problems, err);
    }
  }

  async function decide(approvalId, decision) {
    try {
      await api(`v1/sessions/${encodeURIComponent(id)}/approvals/${encodeURIComponent(approvalId)}`, {
        method: 'POST',
        body: { decision },
      });
      say(`Tool call ${decision === 'approve' ? 'approved' : 'denied'}`);
    } catch (err) {
      failed(problems, err);
    }
  }

  // What the rows say: the session's totals, each turn's cost and latency, each call's class.
  const refreshSession = debounce(async () => {
    try {
      const view = await api(`v1/sessions/${encodeURIComponent(id)}`);
      const m = view.metadata;
      replace(
        meta,
        h('span', { class: `badge s-${m.status}` }, m.status),
        ` · ${m.model || 'no model'} · ${int(m.turn_count)} turn${m.turn_count === 1 ? '' : 's'} · ${tokens(m.total_tokens)} tokens · `,
        cost(m.session_cost),
        ` · started ${when(m.started_at)}`,
      );
    } catch (err) {
      if (err.status !== 404) failed(problems, err);
    }
    try {
      const list = await api(`v1/sessions/${encodeURIComponent(id)}/turns`);
      for (const t of list.data) {
        const turn = turns.get(t.turn_id);
        if (!turn) continue;
        replace(
          turn.footer,
          h('span', { class: `badge t-${t.status}` }, t.status),
          ` · ${int(t.steps)} model calls · ${tokens(t.usage)} tokens · `,
          h('span', { class: 'turn-cost' }, cost(t.cost)),
          ' · ',
          h('span', { class: 'turn-latency' }, duration(t.duration_ms)),
          t.error ? ` · ${t.error}` : '',
          turn.lastSeq && (t.status === 'completed' || t.status === 'failed')
            ? h('button', { type: 'button', class: 'small', onclick: () => fork(turn.lastSeq) }, 'Fork here')
            : '',
        );
      }
    } catch (err) {
      if (err.status !== 404) failed(problems, err);
    }
  }, 250);

  const refreshTools = debounce(async () => {
    try {
      const list = await api(`v1/sessions/${encodeURIComponent(id)}/tool_calls`);
      for (const c of list.data) {
        const card = tools.get(c.tool_use_id);
        if (!card) continue;
        const cls = c.idempotency_class;
        card.cls.textContent = cls ? cls.replace('_or_', '/').replace('_', ' ') : 'not run';
        card.cls.title = cls ? CLASSES[cls] : 'the call did not run (waiting, denied or closed)';
        if (c.duration_ms != null) card.dur.textContent = duration(c.duration_ms);
        for (const s of c.subagents) childLink(card, s.child_session_id, s.attempt);
      }
    } catch (err) {
      if (err.status !== 404) failed(problems, err);
    }
  }, 250);

  function turnOf(turnId) {
    if (!turnId) {
      if (!history) {
        history = {
          body: h('div', { class: 'turn-body' }),
          footer: h('p', { class: 'turn-foot' }),
        };
        transcript.append(
          h('section', { class: 'turn history', 'aria-label': 'Earlier history' }, h('h2', {}, 'History'), history.body),
        );
      }
      return history;
    }
    let turn = turns.get(turnId);
    if (!turn) {
      const index = turns.size + 1;
      turn = {
        index,
        body: h('div', { class: 'turn-body' }),
        footer: h('p', { class: 'turn-foot' }, h('span', { class: 'badge t-queued' }, 'queued')),
        lastSeq: null,
      };
      turn.section = h(
        'section',
        { class: 'turn', 'aria-label': `Turn ${index}`, 'data-turn': turnId },
        h('h2', {}, `Turn ${index}`),
        turn.body,
        turn.footer,
      );
      turns.set(turnId, turn);
      transcript.append(turn.section);
    }
    return turn;
  }

  function userMessage(body, content) {
    body.append(h('div', { class: 'msg user' }, h('p', { class: 'who' }, 'User'), pre(blocksText(content), 'text')));
  }

  function toolCard(turn, block) {
    let card = tools.get(block.id);
    if (card) return card;
    card = {
      status: h('span', { class: 'badge' }, 'requested'),
      cls: h('span', { class: 'badge cls' }, '…'),
      dur: h('span', { class: 'dur' }),
      result: h('div', { class: 'result' }),
      approval: h('div', { class: 'approval' }),
      children: h('ul', { class: 'children' }),
      seen: new Set(),
    };
    card.el = h(
      'div',
      { class: 'tool', 'data-tool': block.id },
      h(
        'p',
        { class: 'tool-head' },
        h('span', { class: 'tool-name' }, block.name),
        ' ',
        card.status,
        ' ',
        card.cls,
        ' ',
        card.dur,
      ),
      h('details', { class: 'tool-input', open: json(block.input).length <= 400 }, h('summary', {}, 'Input'), pre(json(block.input))),
      card.approval,
      card.result,
      card.children,
    );
    tools.set(block.id, card);
    turn.body.append(card.el);
    return card;
  }

  function childLink(card, child, attempt) {
    if (card.seen.has(child)) return;
    card.seen.add(child);
    card.children.append(h('li', {}, `Sub-agent (attempt ${attempt}): `, link(child, 'sessions', child)));
  }

  function assistantMessage(turn, event) {
    const p = event.payload;
    const key = `${event.turn_id}/${event.step}`;
    if (streaming.has(key)) {
      streaming.get(key).box.remove(); // the whole message replaces the streamed text
      streaming.delete(key);
    }
    const parts = [];
    for (const block of p.content) {
      if (block.type === 'text') parts.push(pre(block.text, 'text'));
      else if (block.type === 'thinking')
        parts.push(h('details', { class: 'thinking' }, h('summary', {}, 'Thinking'), pre(block.thinking || '')));
      else if (block.type === 'redacted_thinking') parts.push(h('p', { class: 'muted' }, '(redacted thinking)'));
      else if (block.type !== 'tool_use') parts.push(pre(json(block)));
    }
    const u = p.usage || {};
    turn.body.append(
      h(
        'div',
        { class: 'msg assistant' },
        h('p', { class: 'who' }, 'Assistant'),
        parts,
        h(
          'p',
          { class: 'call-meta' },
          `${p.model} · ${int(u.input_tokens)} in / ${int(u.output_tokens)} out tokens · ${cost(p.cost_usd)} · ${duration(p.duration_ms)}`,
          p.stop_reason && p.stop_reason !== 'end_turn' && p.stop_reason !== 'tool_use' ? ` · stopped: ${p.stop_reason}` : '',
        ),
      ),
    );
    for (const block of p.content) if (block.type === 'tool_use') toolCard(turn, block);
  }

  function toolResult(payload) {
    const card = tools.get(payload.tool_use_id);
    if (!card) return;
    card.status.textContent = payload.is_error ? 'error' : 'ok';
    card.status.className = `badge ${payload.is_error ? 't-failed' : 't-completed'}`;
    if (payload.duration_ms) card.dur.textContent = duration(payload.duration_ms);
    replace(card.result, h('p', { class: 'label' }, 'Result'), pre(blocksText(payload.content), payload.is_error ? 'error-text' : ''));
    if (card.waiting) replace(card.approval); // closed without a decision (the turn ended)
    card.waiting = false;
    card.answered = true;
  }

  function onEvent({ event, data }) {
    const e = JSON.parse(data);
    if (event === 'text_delta') {
      const key = `${e.turn_id}/${e.step}`;
      let shown = streaming.get(key);
      if (!shown) {
        shown = { text: pre('', 'text streaming') };
        shown.box = h('div', { class: 'msg assistant', 'aria-busy': 'true' }, h('p', { class: 'who' }, 'Assistant'), shown.text);
        streaming.set(key, shown);
        turnOf(e.turn_id).body.append(shown.box);
      }
      shown.text.append(e.text);
      return;
    }
    const p = e.payload;
    const turn = e.turn_id ? turnOf(e.turn_id) : null;
    if (turn) turn.lastSeq = e.seq;
    switch (e.type) {
      case 'session_started':
        for (const m of p.history || []) {
          if (m.role === 'user') userMessage(turnOf(null).body, m.content);
          else assistantMessage(turnOf(null), { payload: { ...m, usage: {}, model: 'earlier' }, turn_id: null, step: null });
        }
        replace(
          lineage,
          p.forked_from ? ['Forked from ', link(p.forked_from, 'sessions', p.forked_from), ` at event ${p.forked_at_seq}. `] : '',
          p.parent_session_id ? ['Sub-agent of ', link(p.parent_session_id, 'sessions', p.parent_session_id), '.'] : '',
        );
        refreshSession();
        break;
      case 'user_message':
        userMessage(turn.body, p.content);
        break;
      case 'turn_started':
        replace(turn.footer, h('span', { class: 'badge t-running' }, 'running'));
        break;
      case 'assistant_message':
        assistantMessage(turn, e);
        break;
      case 'tool_requested':
        toolCard(turn, { id: p.tool_use_id, name: p.name, input: p.input });
        break;
      case 'approval_requested': {
        const card = toolCard(turn, { id: p.tool_use_id, name: p.name, input: p.input });
        card.waiting = true;
        card.status.textContent = 'waiting for approval';
        card.status.className = 'badge t-waiting';
        replace(
          card.approval,
          h('button', { type: 'button', onclick: () => decide(p.approval_id, 'approve') }, `Approve ${p.name}`),
          ' ',
          h('button', { type: 'button', class: 'danger-outline', onclick: () => decide(p.approval_id, 'deny') }, `Deny ${p.name}`),
        );
        break;
      }
      case 'approval_decided': {
        refreshTools();
        const card = tools.get(p.tool_use_id);
        if (card) {
          card.waiting = false;
          replace(card.approval, h('p', { class: 'muted' }, p.approved ? 'Approved' : `Denied${p.reason ? `: ${p.reason}` : ''}`));
          if (p.approved) card.status.textContent = 'approved';
        }
        break;
      }
      case 'subagent_requested': {
        const card = tools.get(p.tool_use_id);
        if (card) childLink(card, p.child_session_id, p.attempt);
        refreshTools();
        break;
      }
      case 'subagent_completed':
        toolResult({ tool_use_id: p.tool_use_id, content: p.result, is_error: p.is_error, duration_ms: p.duration_ms });
        refreshTools();
        break;
      case 'model_requested':
        // The results sent with this call: every call of the step is answered by now.
        for (const r of p.tool_results || []) {
          const card = tools.get(r.tool_use_id);
          if (card && !card.answered) toolResult({ tool_use_id: r.tool_use_id, content: r.content, is_error: r.is_error });
        }
        break;
      case 'tool_result':
        toolResult(p);
        refreshTools();
        break;
      case 'turn_completed':
      case 'turn_failed':
        for (const r of p.tool_results || []) {
          const card = tools.get(r.tool_use_id);
          if (card && !card.answered) toolResult({ tool_use_id: r.tool_use_id, content: r.content, is_error: r.is_error });
        }
        replace(turn.footer, h('span', { class: `badge ${e.type === 'turn_failed' ? 't-failed' : 't-completed'}` }, e.type === 'turn_failed' ? 'failed' : 'completed'));
        if (e.type === 'turn_failed') turn.footer.append(` · ${p.reason}`);
        refreshSession();
        refreshTools();
        say(`Turn ${turn.index} ${e.type === 'turn_failed' ? 'failed' : 'finished'}`);
        break;
      case 'context_compacted':
        // What the model is sent from here on: the summary in place of the older messages.
        turn.body.append(
          h(
            'details',
            { class: 'thinking' },
            h(
              'summary',
              {},
              `Context compacted: the first ${p.through} messages summarised, tool results before message ${p.clear_before} cleared (about ${int(p.tokens_before)} → ${int(p.tokens_after)} tokens)`,
            ),
            p.model && p.summary ? pre(p.summary, 'text') : h('p', { class: 'muted' }, 'No new summary: clearing tool results was enough.'),
            p.model ? h('p', { class: 'call-meta' }, `${p.model} · ${cost(p.cost_usd)} · ${duration(p.duration_ms)}`) : '',
          ),
        );
        break;
      case 'session_expired':
        problems.append(h('p', { class: 'muted' }, `The session expired after ${p.idle_s} s idle.`));
        refreshSession();
        break;
      case 'session_deleted':
        problems.append(h('p', { class: 'error' }, 'The session was deleted.'));
        break;
      default:
        break;
    }
  }

  const stream = follow(id, {
    onEvent,
    onState(state, detail) {
      waiting = state === 'waiting';
      live.textContent = waiting ? 'no session yet' : state;
      live.title = detail ? detail.message : '';
      live.className = `badge live-${state}`;
      if (state === 'waiting') replace(meta, `No session ${id} yet: send a message to start it.`);
      if (state === 'closed') failed(problems, detail);
    },
  });
  refreshSession();
  return () => stream.close();
}

// The console's shell: the token, the routes (#/sessions, #/sessions/ID, #/approvals,
// #/fleet) and the view each one shows. Every view returns a function that stops it.

import { ApiError, api, takeTokenFromFragment, token } from './api.js';
import { approvalsView } from './approvals.js';
import { h, replace, say } from './dom.js';
import { fleetView } from './fleet.js';
import { sessionsView } from './sessions.js';
import { sessionView } from './transcript.js';

const main = document.getElementById('main');
let stop = null;

function tokenForm(message) {
  const input = h('input', {
    id: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
  });
  const form = h(
    'form',
    {
      class: 'card',
      onsubmit: (e) => {
        e.preventDefault();
        token.set(input.value);
        render();
      },
    },
    h('h1', {}, 'Sign in'),
    h('p', {}, message),
    h(
      'p',
      {},
      'Paste an api token (',
      h('code', {}, 'agentlog status --json'),
      ' shows the development one, ',
      h('code', {}, 'agentlog token create TENANT'),
      ' makes one), or open the console as ',
      h('code', {}, '/ui/#token=…'),
      '. The token stays in this tab only.',
    ),
    h('label', { for: 'token' }, 'Api token'),
    input,
    h('button', { type: 'submit' }, 'Use this token'),
  );
  replace(main, form);
  input.focus();
}

/** Show the api's 401 as the token form; anything else as a message in the view. */
export function failed(where, err) {
  if (err instanceof ApiError && err.status === 401) {
    const had = token.get();
    token.clear();
    tokenForm(had ? 'That token was refused.' : 'This api needs a token.');
    return;
  }
  replace(where, h('p', { class: 'error', role: 'alert' }, String(err.message || err)));
}

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  return parts[0] ? parts : ['sessions'];
}

async function render() {
  if (stop) stop();
  stop = null;
  const [page, ...rest] = route();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.getElementById('signout').hidden = !token.get();
  replace(main);
  say('');
  const views = { sessions: sessionsView, approvals: approvalsView, fleet: fleetView };
  if (page === 'sessions' && rest.length) stop = sessionView(main, rest.join('/'), failed);
  else if (views[page]) stop = views[page](main, failed);
  else replace(main, h('h1', {}, 'Not found'), h('p', {}, `There is no page ${page}.`));
}

document.getElementById('signout').addEventListener('click', () => {
  token.clear();
  render();
});
window.addEventListener('hashchange', render);
takeTokenFromFragment();
// Ask once whether the api wants a token before showing anything.
api('v1/sessions', { query: { limit: 1 } })
  .then(render)
  .catch((err) => (err instanceof ApiError && err.status === 401 ? failed(main, err) : render()));

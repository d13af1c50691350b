import { AuthRequired, forgetKey, storedKey, storeKey } from './auth.js';
import { clear, fill, h } from './dom.js';
import { renderHistory } from './history.js';
import { renderRun } from './run.js';

const main = document.getElementById('main');
const keyStatus = document.getElementById('key-status');
let stopPage = () => undefined;

function renderKeyStatus() {
  clear(keyStatus);
  if (!storedKey()) return;
  keyStatus.append(
    'API key set for this session ',
    h('button', { type: 'button', className: 'link', onclick: () => { forgetKey(); show(); } }, 'Forget key'),
  );
}

/** Asks for the API key; `refused` is the server's reason when the stored key was not accepted. */
function renderKeyForm(refused) {
  const input = h('input', { type: 'password', id: 'api-key', name: 'api-key', autocomplete: 'off', required: true, placeholder: 'sc_…' });
  const form = h(
    'form',
    {
      className: 'key-form',
      onsubmit: (event) => {
        event.preventDefault();
        if (!input.value.trim()) return;
        storeKey(input.value);
        show();
      },
    },
    h('h1', {}, 'API key'),
    refused
      ? h('p', { className: 'error', role: 'alert', id: 'key-refused' }, `The server refused this key: ${refused}. Enter another one.`)
      : h('p', {}, 'This server requires an API key. It is kept in this tab\'s session only.'),
    h('label', { for: 'api-key' }, 'API key'),
    input,
    h('button', { type: 'submit' }, 'Use this key'),
  );
  fill(main, form);
  input.focus();
}

function renderFailure(error) {
  fill(main, h('p', { className: 'error', role: 'alert' }, error instanceof Error ? error.message : String(error)));
}

function onError(error) {
  if (error instanceof AuthRequired) {
    stopPage();
    if (error.withKey) forgetKey();
    renderKeyStatus();
    renderKeyForm(error.withKey ? error.message : undefined);
    return;
  }
  renderFailure(error);
}

function show() {
  stopPage();
  renderKeyStatus();
  const match = /^\/runs\/([^/]+)\/?$/.exec(location.pathname);
  const page = match ? renderRun(main, decodeURIComponent(match[1]), onError) : renderHistory(main, new URLSearchParams(location.search), onError);
  stopPage = page.stop;
}

show();

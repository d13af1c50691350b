/**
 * JavaScript evaluated inside QuickJS before the program. It captures the built-ins it relies on before the
 * program can replace them, keeps the host functions in a closure (never on globalThis), and does all
 * marshalling as JSON text, so the host only ever receives and sends strings.
 */
export const ERROR_MESSAGE_MAX_CHARS = 2_000;

export const GUEST_PRELUDE = String.raw`(() => {
  'use strict';
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  const isArray = Array.isArray;
  const freeze = Object.freeze;
  const defineProperty = Object.defineProperty;
  const ErrorClass = Error;
  const TypeErrorClass = TypeError;
  const ArrayBufferClass = ArrayBuffer;
  const StringOf = String;
  const slice = Function.prototype.call.bind(String.prototype.slice);

  function toText(value) {
    if (typeof value === 'string') return value;
    try {
      const json = stringify(value);
      if (typeof json === 'string') return json;
    } catch (_) {}
    try {
      return StringOf(value);
    } catch (_) {
      return '[unprintable]';
    }
  }

  function isPlainObject(value) {
    return typeof value === 'object' && value !== null && !isArray(value);
  }

  function install(host, stepsJson, maxLogChars, maxProgressChars) {
    const { hostCall, hostProgress, hostLog } = host;
    const api = freeze({
      call: async function call(operationId, params) {
        if (typeof operationId !== 'string' || operationId === '') {
          throw new TypeErrorClass('api.call(operationId, params): operationId must be a non-empty string');
        }
        if (params === undefined) params = {};
        if (!isPlainObject(params)) {
          throw new TypeErrorClass('api.call(operationId, params): params must be a plain object');
        }
        const paramsJson = stringify(params);
        return parse(await hostCall(operationId, paramsJson));
      },
    });
    const progress = function progress(message) {
      hostProgress(slice(StringOf(message), 0, maxProgressChars));
    };
    const console = freeze({
      log: function log(...args) {
        let line = '';
        for (let i = 0; i < args.length; i++) line += (i === 0 ? '' : ' ') + toText(args[i]);
        hostLog(line.length > maxLogChars ? slice(line, 0, maxLogChars + 1) : line);
      },
    });
    defineProperty(globalThis, 'api', { value: api, enumerable: true });
    defineProperty(globalThis, 'progress', { value: progress, enumerable: true });
    defineProperty(globalThis, 'console', { value: console, enumerable: true });
    globalThis.steps = parse(stepsJson);
  }

  function serializeResult(value, maxChars) {
    const json = stringify(value === undefined ? null : value);
    if (typeof json !== 'string') {
      throw new TypeErrorClass('the program returned a ' + typeof value + ', which is not a JSON value');
    }
    return json.length > maxChars ? json.length : json;
  }

  function describeError(error) {
    let name = '';
    let message;
    let code;
    try {
      if (error instanceof ErrorClass) {
        name = StringOf(error.name);
        message = StringOf(error.message);
        if (typeof error.code === 'string') code = slice(error.code, 0, 100);
      } else {
        message = toText(error);
      }
    } catch (_) {
      message = 'the program threw a value that cannot be read';
    }
    return stringify({ name: slice(name, 0, 100), message: slice(message, 0, ${ERROR_MESSAGE_MAX_CHARS}), code });
  }

  // Both buffers are alive at once, so the memory for both is proven to be there together.
  function reserve(cStringBytes, guestStringBytes) {
    const first = new ArrayBufferClass(cStringBytes);
    const second = new ArrayBufferClass(guestStringBytes);
    return first !== second;
  }

  return { install, serializeResult, describeError, reserve };
})()`;

/** The program body inside an async function, so it may await and must return its result. */
export function wrapProgram(code: string): string {
  return `(async () => {\n${code}\n})()`;
}

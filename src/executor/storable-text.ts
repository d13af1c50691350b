/**
 * A UTF-16 surrogate without its pair: JSON can carry one, but PostgreSQL text and jsonb cannot hold it.
 * In `u` mode a pair is one code point, so only a lone surrogate matches.
 */
export const LONE_SURROGATE = /\p{Surrogate}/u;

const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, 'gu');

/** Text that PostgreSQL's text and jsonb can hold: true unless it has a NUL or a lone surrogate. */
export function isStorableText(text: string): boolean {
  return !text.includes('\u0000') && !LONE_SURROGATE.test(text);
}

/** Text a program or the database produced, made storable: NUL and lone surrogates become U+FFFD. */
export function storableText(text: string): string {
  return text.replaceAll('\u0000', '\uFFFD').replace(LONE_SURROGATES, '\uFFFD');
}

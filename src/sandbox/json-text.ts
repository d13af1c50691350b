/**
 * A host result the program gets as the text it came as: JSON that the sandbox worker checks and parses on
 * its own thread, so that an API response never has to be parsed on the service's heap first.
 */
export class JsonText {
  constructor(readonly text: string) {}
}

/** The error a program gets for JsonText that is not JSON (an API that answered with something else). */
export const NOT_JSON_MESSAGE = 'the API answered with a body that is not JSON';

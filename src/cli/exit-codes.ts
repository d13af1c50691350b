/** What `stepcast` exits with; the README lists these under "Command line". */
export const ExitCode = {
  /** The command did what it was asked; a followed execution SUCCEEDED. */
  ok: 0,
  /** A followed execution FAILED. */
  failed: 1,
  /** A followed execution was CANCELLED. */
  cancelled: 2,
  /** The server answered with an error (NOT_FOUND, BAD_USER_INPUT, UNAUTHENTICATED, ...). */
  refused: 3,
  /** The server could not be reached, or the connection was lost and could not be regained. */
  unreachable: 4,
  /** Wrong arguments or options, or a plan file that cannot be read or is not JSON. */
  usage: 64,
  /** A fault of the CLI itself (a bug); the message says what. */
  internal: 70,
  /** Ctrl-C while following: detached, the execution goes on. */
  detached: 130,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error the CLI reports as one line on stderr, exiting with `exitCode`. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export class UsageError extends CliError {
  override name = 'UsageError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, ExitCode.usage, options);
  }
}

/** The server was reached and answered with GraphQL errors. */
export class ServerError extends CliError {
  override name = 'ServerError';
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(code ? `${message} (${code})` : message, ExitCode.refused);
  }
}

export class ConnectionError extends CliError {
  override name = 'ConnectionError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, ExitCode.unreachable, options);
  }
}

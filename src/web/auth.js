// The API key, entered once and kept for this browser tab's session (sessionStorage): never in a URL or a cookie.

const STORAGE_KEY = 'stepcast.apiKey';

export function storedKey() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) ?? undefined;
  } catch {
    return undefined;
  }
}

export function storeKey(key) {
  sessionStorage.setItem(STORAGE_KEY, key.trim().replace(/^Bearer\s+/i, ''));
}

export function forgetKey() {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** The Authorization header for the stored key, or none (authentication off). */
export function authorizationHeaders() {
  const key = storedKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

/** The server asked for a credential (401): `withKey` says whether the stored key was the one refused. */
export class AuthRequired extends Error {
  constructor(message, withKey) {
    super(message);
    this.name = 'AuthRequired';
    this.withKey = withKey;
  }
}

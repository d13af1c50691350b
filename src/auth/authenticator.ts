import { and, eq, inArray, isNotNull } from 'drizzle-orm';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { AuthConfig, JwtConfig } from '../config.js';
import type { Database } from '../db/client.js';
import { apiKeys, tenants } from '../db/tables.js';
import type { Logger } from '../logger.js';
import { looksLikeApiKey, parseApiKey, secretMatches } from './api-keys.js';

/** Who a request acts for. The tenant always comes from here, never from an argument. */
export type Principal =
  | { kind: 'api-key'; tenantId: string; keyId: string }
  | { kind: 'jwt'; tenantId: string; subject: string | undefined; expiresAt: Date }
  | { kind: 'anonymous'; tenantId: string };

/** A missing, malformed, wrong, revoked or expired credential. The message says which, never whose. */
export class AuthenticationError extends Error {
  override name = 'AuthenticationError';
}

const TENANT_CACHE_MS = 30_000;
const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

export interface Authenticator {
  readonly enabled: boolean;
  /** Checks an `Authorization` value (`Bearer <key or JWT>`; the bare credential is accepted too). */
  authenticate(authorization: string | null | undefined): Promise<Principal>;
  /** Whether a principal authenticated earlier still stands: its key not revoked, its token not expired. */
  stillValid(principal: Principal): boolean;
  /** Re-reads the revocation state of these principals' keys (the WebSocket sweep calls it). */
  refresh(principals: Iterable<Principal>): Promise<void>;
}

export function createAuthenticator({
  database,
  config,
  anonymousTenantId,
  logger,
}: {
  database: Database;
  config: AuthConfig;
  /** Who every request acts as when authentication is off. */
  anonymousTenantId: string;
  logger: Logger;
}): Authenticator {
  if (!config.enabled) {
    const anonymous: Principal = { kind: 'anonymous', tenantId: anonymousTenantId };
    return {
      enabled: false,
      authenticate: async () => anonymous,
      stillValid: () => true,
      refresh: async () => undefined,
    };
  }
  const revokedKeys = new Set<string>();
  const tenantSeen = new Map<string, number>();
  const verifyJwt = config.jwt ? createJwtVerifier(config.jwt) : undefined;

  const tenantExists = async (tenantId: string): Promise<boolean> => {
    const seen = tenantSeen.get(tenantId);
    if (seen !== undefined && Date.now() - seen < TENANT_CACHE_MS) return true;
    const [row] = await database.db.select({ id: tenants.id }).from(tenants).where(eq(tenants.id, tenantId));
    if (!row) return false;
    if (tenantSeen.size > 10_000) tenantSeen.clear();
    tenantSeen.set(tenantId, Date.now());
    return true;
  };

  const authenticateApiKey = async (token: string): Promise<Principal> => {
    const parsed = parseApiKey(token);
    if (!parsed) throw new AuthenticationError('the API key is malformed');
    // One primary-key read per request, so a revoked key stops working at once over HTTP.
    const [key] = await database.db.select().from(apiKeys).where(eq(apiKeys.id, parsed.id));
    if (!key || !secretMatches(parsed.secret, key.secretHash)) throw new AuthenticationError('the API key is not valid');
    if (key.revokedAt) {
      revokedKeys.add(key.id);
      throw new AuthenticationError('the API key has been revoked');
    }
    return { kind: 'api-key', tenantId: key.tenantId, keyId: key.id };
  };

  const authenticateJwt = async (token: string): Promise<Principal> => {
    if (!verifyJwt || !config.jwt) throw new AuthenticationError('the credential is not an API key, and JWTs are not enabled');
    const payload = await verifyJwt(token);
    const tenantId = payload[config.jwt.tenantClaim];
    if (typeof tenantId !== 'string' || tenantId.length === 0) {
      throw new AuthenticationError(`the token has no "${config.jwt.tenantClaim}" claim naming a tenant`);
    }
    if (!(await tenantExists(tenantId))) throw new AuthenticationError('the token names no known tenant');
    return { kind: 'jwt', tenantId, subject: payload.sub, expiresAt: new Date(payload.exp! * 1000) };
  };

  return {
    enabled: true,
    async authenticate(authorization) {
      const credential = bearerCredential(authorization);
      if (!credential) throw new AuthenticationError('authentication required: send Authorization: Bearer <API key or JWT>');
      return looksLikeApiKey(credential) ? authenticateApiKey(credential) : authenticateJwt(credential);
    },
    stillValid(principal) {
      if (principal.kind === 'api-key') return !revokedKeys.has(principal.keyId);
      if (principal.kind === 'jwt') return principal.expiresAt.getTime() > Date.now();
      return true;
    },
    async refresh(principals) {
      const keyIds = new Set<string>();
      for (const principal of principals) if (principal.kind === 'api-key') keyIds.add(principal.keyId);
      if (keyIds.size === 0) return;
      try {
        const revoked = await database.db
          .select({ id: apiKeys.id })
          .from(apiKeys)
          .where(and(inArray(apiKeys.id, [...keyIds]), isNotNull(apiKeys.revokedAt)));
        for (const { id } of revoked) revokedKeys.add(id);
      } catch (error) {
        logger.warn({ err: error }, 'could not re-check API key revocations; will try again');
      }
    },
  };
}

function bearerCredential(authorization: string | null | undefined): string | undefined {
  if (typeof authorization !== 'string') return undefined;
  const trimmed = authorization.trim();
  const match = /^Bearer\s+(\S+)$/i.exec(trimmed);
  if (match) return match[1];
  return /^\S+$/.test(trimmed) ? trimmed : undefined;
}

function createJwtVerifier(config: JwtConfig): (token: string) => Promise<JWTPayload> {
  const options = { issuer: config.issuer, audience: config.audience, requiredClaims: ['exp'] };
  const verify = config.secret
    ? (() => {
        const secret = new TextEncoder().encode(config.secret);
        return (token: string) => jwtVerify(token, secret, { ...options, algorithms: ['HS256'] });
      })()
    : (() => {
        const jwks = createRemoteJWKSet(new URL(config.jwksUrl!));
        return (token: string) => jwtVerify(token, jwks, { ...options, algorithms: ASYMMETRIC_ALGORITHMS });
      })();
  return async (token) => {
    try {
      return (await verify(token)).payload;
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw new AuthenticationError('the token has expired');
      if (error instanceof joseErrors.JWTClaimValidationFailed) {
        throw new AuthenticationError(`the token's "${error.claim}" claim is not accepted`);
      }
      if (error instanceof joseErrors.JOSEError) throw new AuthenticationError('the token is not valid');
      throw error;
    }
  };
}

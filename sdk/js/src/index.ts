// @commandcontrol/session: join a commandcontrol fleet as a session and
// expose functions the workbench calls. See README.md.

export { connectSession, memoryStorage, buildHello, Session, SupersededAfter, ShortConnectionMs, SupersededMaxDelayMs, reconnectBackoff } from "./session.js";
export type {
  BackoffState,
  CallContext,
  CallRecord,
  ExposeOptions,
  SeedStorage,
  SessionFunction,
  SessionOptions,
  SessionStatus,
  TokenRequest,
  TokenSource,
} from "./session.js";
export { latencyCheck, latencyCheckOf, LatencyCheckLimits, MaxRedirects } from "./latency.js";
export type { LatencyCheckArgs, LatencyCheckResult } from "./latency.js";
export { parseArgs } from "./args.js";
export type { ArgSpec, ArgType, ArgValue, Args } from "./args.js";
export {
  agentReply,
  argsDigest,
  CallError,
  callReply,
  checkCallId,
  Codes,
  Headers,
  InboxRoot,
  machineReplies,
  MaxCallIDLen,
  MaxRequestSize,
  DefaultMaxAnswer,
  MaxSessionHello,
  parseCallReply,
  parseSessionFnSubject,
  SessionFnRoot,
  sessionFnSubject,
  sessionFnWildcard,
  sessionId,
  sessionReply,
  validateSessionId,
} from "./wire.js";
export type { ReplySubject, SessionCall } from "./wire.js";
export { sha256 } from "./sha256.js";
export { base64url, encodeSessionToken, signSessionToken } from "./token.js";
export type { SessionTokenClaims } from "./token.js";

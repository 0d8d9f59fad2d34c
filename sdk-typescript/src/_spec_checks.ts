/**
 * Compile-time checks that the hand-written public types match the spec's
 * (generated from `spec/openapi.yaml` at build time). Each line fails the
 * build when the spec changes under it; `_wire.ts` checks the routes, query
 * strings and bodies.
 */

import type { ErrorBody } from './errors.js';
import type { Schemas } from './_wire.js';
import type { FastpacaMessage, LogMessage, MessagePage, MessagePart, ReplacementMessage } from './types.js';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type MutuallyAssignable<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<Condition extends true> = Condition;

export type SpecChecks = [
  // A message to append has exactly the spec's message fields.
  Assert<Equal<keyof FastpacaMessage, keyof Schemas['Message']>>,
  Assert<Equal<keyof ReplacementMessage, keyof Schemas['ReplacementMessage']>>,
  // A part is a `type` plus free fields.
  Assert<MutuallyAssignable<MessagePart, Schemas['Part']>>,
  // Pages and log messages read back as the spec describes them.
  Assert<Equal<keyof MessagePage, keyof Schemas['Page']>>,
  Assert<MutuallyAssignable<MessagePage, Schemas['Page']>>,
  Assert<MutuallyAssignable<LogMessage, Schemas['LogMessage']>>,
  // The error body.
  Assert<MutuallyAssignable<ErrorBody, Schemas['Error']>>,
];

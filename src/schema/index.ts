import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { builder } from './builder.js';
import './scalars.js';
import './enums.js';
import './step-result.js';
import './execution.js';
import './plan-input.js';
import './step-updates.js';

export const schema: GraphQLSchema = builder.toSchema();

/** The SDL checked in as schema.graphql; a test fails when the two drift apart. */
export function printStepcastSchema(): string {
  return `${printSchema(lexicographicSortSchema(schema))}\n`;
}

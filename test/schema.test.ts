import { readFileSync } from 'node:fs';
import { buildSchema, isEnumType, isObjectType, type GraphQLSchema } from 'graphql';
import { beforeAll, describe, expect, it } from 'vitest';
import { printStepcastSchema } from '../src/schema/index.js';

const SCHEMA_FILE = new URL('../schema.graphql', import.meta.url);

// The schema does not depend on the database, so this file runs once rather than once per backend.
describe('schema.graphql, the published API contract', () => {
  let checkedIn: string;
  let schema: GraphQLSchema;

  beforeAll(() => {
    checkedIn = readFileSync(SCHEMA_FILE, 'utf8');
    schema = buildSchema(checkedIn);
  });

  it('is exactly the schema the server serves', () => {
    expect(
      checkedIn,
      'schema.graphql is out of date with src/schema: run `npm run schema:print` and commit the result',
    ).toBe(printStepcastSchema());
  });

  const enums: Record<string, string[]> = {
    StepKind: ['SQL', 'API'],
    ExecutionStatus: ['QUEUED', 'RUNNING', 'WAITING', 'SUCCEEDED', 'FAILED', 'CANCELLED'],
    StepStatus: ['PENDING', 'WAITING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED'],
    StepUpdateType: [
      'PLAN_CREATED',
      'EXECUTION_STARTED',
      'EXECUTION_RESUMED',
      'STEP_WAITING',
      'STEP_APPROVED',
      'STEP_REJECTED',
      'STEP_STARTED',
      'STEP_PROGRESS',
      'STEP_SUCCEEDED',
      'STEP_FAILED',
      'STEP_SKIPPED',
      'STEP_CANCELLED',
      'EXECUTION_SUCCEEDED',
      'EXECUTION_FAILED',
      'EXECUTION_CANCELLED',
    ],
  };

  for (const [name, values] of Object.entries(enums)) {
    it(`has enum ${name} with exactly ${values.join(', ')}`, () => {
      const type = schema.getType(name);
      expect(isEnumType(type), `${name} must be an enum`).toBe(true);
      if (!isEnumType(type)) return;
      expect(type.getValues().map((value) => value.name).sort()).toEqual([...values].sort());
    });
  }

  /** root type → field → [return type, { argument: type }] */
  const operations: Record<string, Record<string, [string, Record<string, string>]>> = {
    Mutation: { executePlan: ['Execution!', { plan: 'PlanInput!', options: 'ExecuteOptions' }] },
    Subscription: { stepUpdates: ['StepUpdate!', { executionId: 'ID!', afterSequence: 'Int' }] },
    Query: {
      execution: ['Execution', { id: 'ID!' }],
      executions: ['ExecutionConnection!', { first: 'Int', after: 'String', filter: 'ExecutionFilter' }],
    },
  };

  for (const [root, fields] of Object.entries(operations)) {
    for (const [field, [returns, args]] of Object.entries(fields)) {
      const signature = Object.entries(args)
        .map(([arg, type]) => `${arg}: ${type}`)
        .join(', ');
      it(`has ${root}.${field}(${signature}): ${returns}`, () => {
        const rootType = schema.getType(root);
        expect(isObjectType(rootType), `${root} must be an object type`).toBe(true);
        if (!isObjectType(rootType)) return;
        expect(rootType, `${root} must be the schema's ${root.toLowerCase()} root`).toBe(
          { Query: schema.getQueryType(), Mutation: schema.getMutationType(), Subscription: schema.getSubscriptionType() }[root],
        );
        const definition = rootType.getFields()[field];
        expect(definition, `${root}.${field} must exist`).toBeDefined();
        expect(String(definition!.type)).toBe(returns);
        expect(Object.fromEntries(definition!.args.map((arg) => [arg.name, String(arg.type)]))).toEqual(args);
      });
    }
  }
});

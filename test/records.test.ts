import { describe, expect, it } from 'vitest';
import { inferColumns, toRecords } from '../src/executor/records.js';

describe('columns of the records a program returns', () => {
  it("leaves out of step_N the keys PostgreSQL cannot name (empty, over 63 bytes, NUL, a lone surrogate), and keeps them in the records", () => {
    const record = { id: 1, '': 'empty', ['k'.repeat(64)]: 'long', 'nul\u0000key': 'nul', 'half\uD800': 'surrogate', 'żółw 🐢': 'paired' };
    const records = toRecords([record]);
    expect(inferColumns(records)).toEqual([
      { name: 'id', type: 'bigint' },
      { name: 'żółw 🐢', type: 'text' },
    ]);
    expect(records).toEqual([record]);
  });
});

import { writeFileSync } from 'node:fs';
import { printStepcastSchema } from '../src/schema/index.js';

writeFileSync(new URL('../schema.graphql', import.meta.url), printStepcastSchema());
console.log('wrote schema.graphql');

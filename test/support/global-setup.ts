import type { TestProject } from 'vitest/node';
import { buildPgliteTemplate } from './pglite-template.js';

/** Once per vitest run: the migrated PGlite template that test servers copy (see pglite-template.ts). */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const template = await buildPgliteTemplate();
  project.provide('pgliteTemplate', { dir: template.dir, migrationsHash: template.migrationsHash });
  return () => template.remove();
}

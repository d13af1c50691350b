import type { CodegenConfig } from '@graphql-codegen/cli';

const clientPreset = {
  preset: 'client',
  config: {
    documentMode: 'string',
    useTypeImports: true,
    enumsAsTypes: true,
    scalars: { DateTime: 'string', JSON: 'unknown' },
  },
  presetConfig: { fragmentMasking: false },
} as const;

const config: CodegenConfig = {
  schema: './schema.graphql',
  ignoreNoDocuments: false,
  emitLegacyCommonJSImports: false,
  generates: {
    './test/generated/': { ...clientPreset, documents: ['test/**/*.ts', '!test/generated/**'] },
    './src/cli/generated/': { ...clientPreset, documents: ['src/cli/**/*.ts', '!src/cli/generated/**'] },
  },
};

export default config;

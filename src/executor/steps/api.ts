import { StepFailure } from '../errors.js';
import type { StepHandler } from './step-handler.js';

export const runUnsupportedApiStep: StepHandler = async (context) => {
  throw new StepFailure(
    'UNSUPPORTED_STEP',
    `step ${context.index} is an API step, and this server does not run API steps yet`,
  );
};

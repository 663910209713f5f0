/** The software version peers report to the control plane (src/lib/live); keep it equal to package.json's and main.ts's. */
export const CAUSEWAY_VERSION = '0.1.0';

// Example: a rate-based sampler. Keeps 1 record in N ({"one_in": 10}) or at most N records
// per second of record time ({"per_second": 100}), using the timestamps the agent stamps on
// each line (guests get only a coarse clock; record time is what the operator means anyway).

import { ConfigError, exportFilter } from "../template/logfleet-filter.js";

export class Sampler {
  static fields = ["timestamp"];

  constructor(config) {
    const { one_in: oneIn, per_second: perSecond, ...rest } = config ?? {};
    if (Object.keys(rest).length > 0) throw new ConfigError(`unknown keys: ${Object.keys(rest).join(", ")}`);
    if ((oneIn === undefined) === (perSecond === undefined)) {
      throw new ConfigError('config needs exactly one of "one_in" or "per_second"');
    }
    const n = oneIn ?? perSecond;
    if (!Number.isInteger(n) || n < 1) throw new ConfigError("the rate must be a positive integer");
    this.oneIn = oneIn ?? null;
    this.perSecond = perSecond ?? null;
    this.seen = 0;
    this.second = null;
    this.keptThisSecond = 0;
  }

  record(r) {
    if (this.oneIn !== null) {
      return this.seen++ % this.oneIn === 0;
    }
    const second = Math.floor(r.timestamp / 1000);
    if (second !== this.second) {
      this.second = second;
      this.keptThisSecond = 0;
    }
    return this.keptThisSecond++ < this.perSecond;
  }
}

export const { configure, requiredFields, filterBatch } = exportFilter(Sampler);

// A LogFleet filter in JavaScript: keeps lines containing a text and optionally tags them.
// Copy this directory to start. Config: {"contains": "timeout", "tag": "[slow]"}.

import { ConfigError, exportFilter } from "./logfleet-filter.js";

export class Contains {
  static fields = ["message"];

  constructor(config) {
    this.text = config?.contains;
    if (typeof this.text !== "string" || this.text === "") {
      throw new ConfigError('config needs "contains": a non-empty string');
    }
    this.tag = config.tag ?? null;
  }

  record(r) {
    const message = r.message;
    if (!message.includes(this.text)) return false;
    return this.tag ? `${this.tag} ${message}` : true;
  }
}

export const { configure, requiredFields, filterBatch } = exportFilter(Contains);

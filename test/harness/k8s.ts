/** Reading deploy/kubernetes from tests: the directory and a strict multi-document YAML parser. */
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export const K8S_DIR = join(__dirname, '../../../deploy/kubernetes');

export interface K8sObject { apiVersion: string; kind: string; metadata?: { name?: string; namespace?: string }; [k: string]: unknown }

/** Every document of a YAML text, as plain objects; YAML errors (duplicate keys included) throw. */
export function parseYamlDocs(text: string, file: string): K8sObject[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS() as K8sObject;
  }).filter((o) => o !== null);
}

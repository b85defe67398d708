// Roles as the API applies them: a viewer reads, an operator acts, an admin also manages tokens.
const ORDER = ["viewer", "operator", "admin"] as const;
export type Role = (typeof ORDER)[number];

export function roleAtLeast(role: string | null | undefined, needed: Role): boolean {
  const have = ORDER.indexOf(role as Role);
  return have >= 0 && have >= ORDER.indexOf(needed);
}

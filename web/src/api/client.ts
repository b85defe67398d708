import createClient, { type Middleware } from "openapi-fetch";
import type { paths } from "./schema";

/** Raised for any non-2xx answer; carries the RFC 7807 problem's detail when there is one. */
export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Where the UI goes when the session is missing or no longer valid. */
export function signInUrl(next = window.location.pathname + window.location.search): string {
  return next && next !== "/" && !next.startsWith("/signin")
    ? `/signin?next=${encodeURIComponent(next)}`
    : "/signin";
}

const onUnauthorized: Middleware = {
  onResponse({ response, request }) {
    const url = new URL(request.url);
    // /me is the app's own sign-in check (it routes to /signin itself); any other call that
    // gets a 401 means the session ended while the page was open.
    if (response.status === 401 && url.pathname !== "/api/v1/session" && url.pathname !== "/api/v1/me") {
      if (!window.location.pathname.startsWith("/signin")) window.location.assign(signInUrl());
    }
    return undefined;
  },
};

// Same origin; the HttpOnly session cookie authenticates every call.
export const api = createClient<paths>({ baseUrl: "", credentials: "same-origin" });
api.use(onUnauthorized);

/** Unwrap an openapi-fetch result: data, or an ApiError with the problem's detail. */
export async function unwrap<T>(
  p: Promise<{ data?: unknown; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await p;
  if (!response.ok) {
    const detail =
      error && typeof error === "object" && "detail" in error
        ? String((error as { detail: unknown }).detail)
        : response.statusText;
    throw new ApiError(response.status, detail || `HTTP ${response.status}`);
  }
  return data as T;
}

import { useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useNavigate, useSearchParams } from "react-router-dom";
import { api } from "../api/client";
import { useTheme } from "../lib/theme";

export default function SignIn() {
  const [params] = useSearchParams();
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(
    params.get("error") === "invalid_token" ? "That token is unknown or revoked." : null,
  );
  const navigate = useNavigate();
  const qc = useQueryClient();
  const [theme, toggle] = useTheme();
  const next = params.get("next");
  const safeNext = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) {
      setError("Paste an API token first.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const { response } = await api.POST("/api/v1/session", { body: { token: t } });
      if (response.ok) {
        qc.clear();
        navigate(safeNext, { replace: true });
      } else if (response.status === 401) {
        setError("That token is unknown or revoked.");
      } else {
        setError(`Sign-in failed (HTTP ${response.status}).`);
      }
    } catch {
      setError("Cannot reach the control plane.");
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="flex min-h-screen items-center justify-center p-4">
      <button type="button" onClick={toggle} className="fixed top-3 right-3 rounded-md border border-slate-300 px-2 py-1 text-xs dark:border-slate-700">
        {theme === "dark" ? "☀ Light" : "☾ Dark"}
      </button>
      <form onSubmit={submit} className="w-full max-w-md rounded-xl border border-slate-200 bg-white p-6 shadow-sm dark:border-slate-800 dark:bg-slate-900" data-testid="signin-form">
        <div className="mb-5 flex items-center gap-2">
          <span className="grid h-8 w-8 place-items-center rounded-md bg-emerald-500 text-sm font-bold text-white">gw</span>
          <h1 className="text-lg font-semibold">Sign in to gpuwarden</h1>
        </div>
        <label htmlFor="token" className="text-sm font-medium">
          API token
        </label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          autoFocus
          spellCheck={false}
          value={token}
          onChange={(e) => setToken(e.target.value)}
          placeholder="gw_…"
          className="mt-1 block h-10 w-full rounded-md border border-slate-300 bg-white px-3 font-mono text-sm dark:border-slate-700 dark:bg-slate-950"
          data-testid="signin-token"
        />
        <p className="mt-2 text-xs text-slate-500">
          The admin token is printed once when <code>gpuwarden serve</code> first starts; create more with{" "}
          <code>gpuwarden token create --role viewer</code>. The token is kept in an HttpOnly cookie, never in page storage.
        </p>
        {error && (
          <p role="alert" className="mt-3 rounded-md bg-rose-50 px-3 py-2 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200" data-testid="signin-error">
            {error}
          </p>
        )}
        <button
          type="submit"
          disabled={busy}
          className="mt-4 h-10 w-full rounded-md bg-slate-900 text-sm font-medium text-white hover:bg-slate-700 disabled:opacity-60 dark:bg-slate-100 dark:text-slate-900 dark:hover:bg-white"
          data-testid="signin-submit"
        >
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </div>
  );
}

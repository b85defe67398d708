import * as S from "@radix-ui/react-select";

const ALL = "__all__";

/** A labelled Radix select; "" means "any". */
export function FilterSelect({
  label,
  value,
  options,
  onChange,
  anyLabel = "All",
  testid,
}: {
  label: string;
  value: string;
  options: { value: string; label: string }[];
  onChange: (v: string) => void;
  anyLabel?: string;
  testid?: string;
}) {
  return (
    <label className="flex flex-col gap-1 text-xs font-medium text-slate-500 dark:text-slate-400">
      {label}
      <S.Root value={value || ALL} onValueChange={(v) => onChange(v === ALL ? "" : v)}>
        <S.Trigger
          aria-label={label}
          data-testid={testid}
          className="inline-flex h-8 min-w-36 items-center justify-between gap-2 rounded-md border border-slate-300 bg-white px-2.5 text-sm text-slate-900 hover:border-slate-400 dark:border-slate-700 dark:bg-slate-900 dark:text-slate-100"
        >
          <S.Value />
          <S.Icon className="text-slate-400">▾</S.Icon>
        </S.Trigger>
        <S.Portal>
          <S.Content
            position="popper"
            sideOffset={4}
            className="z-50 max-h-80 min-w-(--radix-select-trigger-width) overflow-hidden rounded-md border border-slate-200 bg-white shadow-lg dark:border-slate-700 dark:bg-slate-900"
          >
            <S.Viewport className="p-1">
              {[{ value: ALL, label: anyLabel }, ...options].map((o) => (
                <S.Item
                  key={o.value}
                  value={o.value}
                  className="cursor-pointer rounded px-2 py-1.5 text-sm text-slate-800 outline-none select-none data-[highlighted]:bg-sky-100 data-[state=checked]:font-semibold dark:text-slate-200 dark:data-[highlighted]:bg-sky-900/50"
                >
                  <S.ItemText>{o.label}</S.ItemText>
                </S.Item>
              ))}
            </S.Viewport>
          </S.Content>
        </S.Portal>
      </S.Root>
    </label>
  );
}

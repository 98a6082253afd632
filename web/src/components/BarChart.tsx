export interface Bar {
  label: string;
  value: number;
  /** Stacked parts, each with its own colour class (fill-…); their sum is the bar. */
  parts?: { value: number; className: string; name: string }[];
}

/** A small bar chart in SVG, with its figures in a table for screen readers. */
export function BarChart({
  bars,
  title,
  format = (v) => String(v),
  className = "fill-indigo-600",
}: {
  bars: Bar[];
  title: string;
  format?: (value: number) => string;
  className?: string;
}) {
  if (bars.length === 0) return <p className="px-4 py-6 text-sm text-slate-600">No data yet.</p>;
  const width = 600;
  const height = 180;
  const top = 16;
  const bottom = 36;
  const max = Math.max(...bars.map((b) => b.value), 0) || 1;
  const slot = width / bars.length;
  const barWidth = Math.min(48, slot * 0.7);
  const scale = (height - top - bottom) / max;
  const every = Math.ceil(bars.length / 10);
  return (
    <figure className="px-4 py-3">
      <svg viewBox={`0 0 ${width} ${height}`} className="h-auto w-full" role="img" aria-label={title}>
        <line x1={0} x2={width} y1={height - bottom} y2={height - bottom} className="stroke-slate-300" />
        {bars.map((bar, index) => {
          const x = index * slot + (slot - barWidth) / 2;
          let y = height - bottom;
          const parts = bar.parts ?? [{ value: bar.value, className, name: "" }];
          return (
            <g key={bar.label}>
              {parts.map((part) => {
                const h = part.value * scale;
                y -= h;
                return (
                  <rect key={part.name} x={x} y={y} width={barWidth} height={h} rx={2} className={part.className}>
                    <title>{`${bar.label}${part.name ? ` ${part.name}` : ""}: ${format(part.value)}`}</title>
                  </rect>
                );
              })}
              <text x={x + barWidth / 2} y={height - bottom - bar.value * scale - 4} textAnchor="middle" className="fill-slate-700 text-[11px]">
                {format(bar.value)}
              </text>
              {index % every === 0 && (
                <text x={x + barWidth / 2} y={height - bottom + 16} textAnchor="middle" className="fill-slate-600 text-[11px]">
                  {bar.label}
                </text>
              )}
            </g>
          );
        })}
      </svg>
      <table className="sr-only">
        <caption>{title}</caption>
        <tbody>
          {bars.map((bar) => (
            <tr key={bar.label}>
              <th scope="row">{bar.label}</th>
              <td>{format(bar.value)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </figure>
  );
}

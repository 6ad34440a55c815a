() => {
  // The accessibility audit of tests/e2e/test_board.py, run in the page (Playwright's evaluate).
  const problems = [];
  const rgba = (text) => {
    const m = text.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const v = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1];
  };
  const over = (top, below) => [0, 1, 2].map(i => top[i] * top[3] + below[i] * (1 - top[3]));
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let colour = [255, 255, 255];
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
    return o;
  };
  const lum = (c) => {
    const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const hidden = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || s.visibility === 'hidden') return true;
      if (e.classList && (e.classList.contains('sr-only') || e.classList.contains('skip'))) return true;
      if (e.tagName === 'DETAILS' && !e.open && e.firstElementChild && !e.firstElementChild.contains(el)) return true;
    }
    return false;
  };
  const name = (el) => (el.getAttribute('aria-label') || '').trim()
    || (el.getAttribute('aria-labelledby') || '').split(' ').map(i => document.getElementById(i)).filter(Boolean).map(e => e.textContent.trim()).join(' ')
    || (el.id && [...document.querySelectorAll('label')].filter(l => l.htmlFor === el.id).map(l => l.textContent.trim()).join(' '))
    || (el.closest('label') ? el.closest('label').textContent.trim() : '')
    || ((el.tagName === 'BUTTON' || el.tagName === 'A') ? el.textContent.trim() : '');
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a[href]')) {
    if (!name(el)) problems.push('no accessible name: ' + el.outerHTML.slice(0, 120));
  }
  for (const svg of document.querySelectorAll('main svg')) {
    if (svg.getAttribute('role') !== 'img' || !name(svg)) problems.push('chart without role=img and a label: ' + svg.outerHTML.slice(0, 120));
  }
  for (const table of document.querySelectorAll('table')) {
    if (!(table.caption && table.caption.textContent.trim()) && !name(table)) problems.push('table without caption or label: ' + (table.id || table.className));
  }
  for (const el of document.querySelectorAll('main *, header *')) {
    const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent.trim()).join(' ');
    if (!own || hidden(el) || el.closest('title')) continue;
    const style = getComputedStyle(el);
    const inSvg = el.closest('svg') !== null;
    const fg = rgba(inSvg ? style.fill : style.color);
    if (!fg) continue;
    const bg = background(inSvg ? el.closest('svg') : el);
    const seen = over([fg[0], fg[1], fg[2], fg[3] * opacity(el)], bg);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    const r = ratio(seen, bg);
    if (r < needed) problems.push(`contrast ${r.toFixed(2)} < ${needed}: "${own.slice(0, 40)}" (${el.tagName.toLowerCase()}${el.className && typeof el.className === 'string' ? '.' + el.className : ''})`);
  }
  return [...new Set(problems)];
}

// Display equations wider than the text column are scaled down to fit it, as LaTeX's \resizebox would,
// instead of scrolling sideways (MathJax 3 cannot break a display equation across lines). Once done the
// page carries data-math-fitted, which the browser tests wait for.
(function () {
  function fit() {
    for (const box of document.querySelectorAll('mjx-container[display="true"]')) {
      box.style.fontSize = "";
      const overflow = box.scrollWidth / Math.max(box.clientWidth, 1);
      if (overflow > 1.001) box.style.fontSize = `${Math.floor(100 / overflow) - 1}%`;
    }
    document.documentElement.dataset.mathFitted = "true";
  }
  function whenTypeset() {
    const startup = window.MathJax && window.MathJax.startup;
    if (startup && startup.promise) startup.promise.then(fit);
    else if (!document.querySelector(".math")) fit();
    else setTimeout(whenTypeset, 100);
  }
  document.addEventListener("DOMContentLoaded", whenTypeset);
  let pending;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(fit, 150);
  });
})();

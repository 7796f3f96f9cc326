// Typeset the math that pymdownx.arithmatex (generic mode) wraps in <span|div class="arithmatex">.
// KaTeX itself is shipped beside this file: nothing is fetched from the network.
function typesetMath() {
  for (const element of document.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  }
}
if (typeof document$ !== "undefined") {
  document$.subscribe(typesetMath); // Material's page-change event (instant navigation)
} else {
  document.addEventListener("DOMContentLoaded", typesetMath);
}

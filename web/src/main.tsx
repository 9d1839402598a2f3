import { render } from 'preact';
import { App } from './app';
import { applyTheme } from './lib/theme';
import { live } from './lib/live';
import { auth } from './lib/auth';
import './styles.css';

applyTheme();
live.start();
// Another project or key: the live stream follows it.
let epoch = auth.epoch;
auth.subscribe(() => {
  if (auth.epoch !== epoch) {
    epoch = auth.epoch;
    live.restart();
  }
});
render(<App />, document.getElementById('app')!);

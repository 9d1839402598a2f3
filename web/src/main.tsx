import { render } from 'preact';
import { App } from './app';
import { applyTheme } from './lib/theme';
import { live } from './lib/live';
import './styles.css';

applyTheme();
live.start();
render(<App />, document.getElementById('app')!);
